"""Tiny Kimi-K2-architecture model trained on a synthetic corpus."""
