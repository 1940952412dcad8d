"""Backends: how a suite talks to a model (in-process transformers now; serving engines later)."""
