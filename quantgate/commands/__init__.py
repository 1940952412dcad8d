"""The app's subcommands: gate, report, sync and compare, nightly (quant/cli.py, harness/cli.py: the producers' own)."""
