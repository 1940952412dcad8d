"""The nightly: build a plan's variants, evaluate them against the baseline, record, gate, report."""
