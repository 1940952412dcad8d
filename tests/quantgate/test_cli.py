"""`quantgate --help` lists exactly the registered commands, and each of them answers --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quantgate.cli import build_parser, main, registered_commands


def test_help_lists_registered_commands_only():
    text = build_parser(registered_commands()).format_help()
    listed = {c.name for c in registered_commands()}
    for name in listed:
        assert name in text
    assert len(listed) == len(registered_commands())  # no duplicate names


@pytest.mark.parametrize("name", [c.name for c in registered_commands()])
def test_each_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as stop:
        main([name, "--help"])
    assert stop.value.code == 0
    assert "usage: quantgate" in capsys.readouterr().out


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "quantgate.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("quantgate ")


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


HEAVY = ("torch", "transformers", "compressed_tensors", "mlflow", "lm_eval", "pandas", "requests")


def test_parser_is_built_without_heavy_imports():
    """`quantgate quantize` starts hashing its source before compressed-tensors (~8 s) is imported."""
    probe = (
        "import sys\n"
        "from quantgate.cli import build_parser, registered_commands\n"
        "build_parser(registered_commands()).parse_args(['quantize', '--help'][:1])\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_a_mistyped_flag_is_named_with_its_close_match(capsys):
    """`--suites` for `--suite`: the typo is the error, not the then-missing required flag."""
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", "m", "--suites", "perplexity", "--out", "o"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "quantgate eval: error: unrecognized argument --suites; did you mean --suite?"
    )
