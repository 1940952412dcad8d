"""Tool-call parsing and validation: model output is data, parsed and validated, never executed."""
