"""Shipped suites, their data and lm-eval task YAMLs: package data (`importlib.resources.files("quantgate.suites")`)."""
