"""The core below quant/ and harness/: errors, typed YAML, provenance, MoE patterns, checkpoint identity,
the manifest, the result record and metric definitions. Imports nothing of quant, harness or the app."""
