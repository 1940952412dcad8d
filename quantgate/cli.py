"""The `quantgate` command: an explicit registry of subcommands.

Each subcommand module exposes a `Command` (name, help, how to add its arguments, how to run).
Only commands that work are registered. Input errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from quantgate import __version__
from quantgate.commands.quiet import quiet_libraries
from quantgate.core.errors import InputError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def registered_commands() -> list[Command]:
    """The registry. Imports are local so that `import quantgate` stays lean."""
    from harness.cli import add_eval_arguments, run_eval
    from harness.serve import add_serve_arguments, run_serve
    from quant.cli import add_inspect_arguments, add_quantize_arguments, run_inspect, run_quantize
    from quantgate.commands.accept import add_accept_arguments, run_accept
    from quantgate.commands.drill import add_drill_arguments, run_drill_command
    from quantgate.commands.gate import add_gate_arguments, run_gate
    from quantgate.commands.nightly import add_nightly_arguments, run_nightly_command
    from quantgate.commands.report import add_report_arguments, run_report
    from quantgate.commands.tracking import add_compare_arguments, add_sync_arguments, run_compare, run_sync

    return [
        Command(
            name="nightly",
            help="The main job: build a plan's variants, evaluate them against BF16, gate, report, log to MLflow.",
            add_arguments=add_nightly_arguments,
            run=run_nightly_command,
        ),
        Command(
            name="drill",
            help="False alarms: a plan's baseline against itself (threads, batch; latency beside itself), per gate.",
            add_arguments=add_drill_arguments,
            run=run_drill_command,
        ),
        Command(
            name="quantize",
            help="Quantize a BF16 checkpoint (RTN, or --method gptq) with a registered scheme or a variants file.",
            add_arguments=add_quantize_arguments,
            run=run_quantize,
        ),
        Command(
            name="inspect",
            help="Show a quantized checkpoint's scheme, what is quantized per MoE group, and its size.",
            add_arguments=add_inspect_arguments,
            run=run_inspect,
        ),
        Command(
            name="eval",
            help="Measure checkpoints on suites (perplexity, latency, ...) against a cached BF16 baseline.",
            add_arguments=add_eval_arguments,
            run=run_eval,
        ),
        Command(
            name="serve",
            help="Serve a checkpoint with vLLM (OpenAI-compatible), flags from the model; prints the URL.",
            add_arguments=add_serve_arguments,
            run=run_serve,
        ),
        Command(
            name="gate",
            help="Judge a nightly's results against its plan's gates (exit 0 pass, 1 fail); JUnit, Markdown.",
            add_arguments=add_gate_arguments,
            run=run_gate,
        ),
        Command(
            name="report",
            help="Gate a nightly and write its report (Markdown, HTML with plots), from local results or MLflow.",
            add_arguments=add_report_arguments,
            run=run_report,
        ),
        Command(
            name="accept",
            help="Accept an intended change: a nightly becomes the history gates' reference for its variants.",
            add_arguments=add_accept_arguments,
            run=run_accept,
        ),
        Command(
            name="compare",
            help="Variants against the baseline (or any two runs), read back from MLflow, as a table.",
            add_arguments=add_compare_arguments,
            run=run_compare,
        ),
        Command(
            name="sync",
            help="Upload nightlies kept in the outbox (state/outbox/) while MLflow was unreachable.",
            add_arguments=add_sync_arguments,
            run=run_sync,
        ),
    ]


class SuggestingParser(argparse.ArgumentParser):
    """argparse that names a mistyped flag, with its close match, before anything else it would say:
    `eval --suites x` is "unrecognized argument --suites; did you mean --suite?", not
    "the following arguments are required: --suite". Subcommand parsers are of the same class."""

    command_parser = False  # a subcommand's: an unknown flag is its error (it knows the close match)

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201  (argparse's signature)
        self._given = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(args, namespace)
        if self.command_parser and any(e.startswith("--") for e in extras):
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message: str):  # noqa: ANN201
        flags = [o for o in self._option_string_actions if o.startswith("--")]
        for token in getattr(self, "_given", []):
            if token == "--":
                break  # what follows is passed on (e.g. to vLLM)
            flag = token.split("=", 1)[0]
            if flag.startswith("--") and flag not in flags and not any(f.startswith(flag) for f in flags):
                close = difflib.get_close_matches(flag, flags, n=1)
                message = f"unrecognized argument {flag}" + (f"; did you mean {close[0]}?" if close else "")
                break
        super().error(message)


def build_parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="quantgate",
        description="Quantize MoE checkpoints, measure them against BF16, and gate releases on the result.",
    )
    parser.add_argument("--version", action="version", version=f"quantgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command_parser.command_parser = True
        command.add_arguments(command_parser)
        command_parser.add_argument(
            "-v", "--verbose", action="store_true", help="show the libraries' progress bars and warnings"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    commands = registered_commands()
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if not args.verbose:
        quiet_libraries()
    try:
        return {c.name: c for c in commands}[args.command].run(args)
    except InputError as error:
        print(f"quantgate: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
