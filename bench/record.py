"""Write a benchmark's results to docs/benchmarks/<name>.md (and <name>.json beside it).

Measured figures are never typed into the docs by hand: a bench script run with `--record` writes
them here, with the conditions they were measured under, and the docs link to the file.

    add_record_argument(parser)  # --record [DIR]
    args = parser.parse_args()
    recording = start_recording("quantize_throughput", args.record) if args.record else None
    ...  # measure
    if recording:
        recording.write([Table("runs", ("tool", "wall s"), rows)], data=results, notes=["..."])

The header says when (UTC), on what machine (CPU model, nproc, memory), under what load (the
1-minute load average at the start and at the end), by which exact command and at which git
revision. The tables follow as Markdown, formatted only from the values given, so the same
values give the same bytes. Both files are written to temporary names first and renamed into
place, so a reader sees the old pair or the new one, never half a file.

Standard library only: a bench script imports this before torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = ROOT / "docs" / "benchmarks"

Cell = str | int | float | bool | None


@dataclass(frozen=True)
class Table:
    """One result table: a title, column names and rows of cells (numbers are formatted here)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in self.rows))
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {i} has {len(row)} cells, {len(self.columns)} columns")

    def markdown(self) -> str:
        filled = [[row[i] for row in self.rows if row[i] not in (None, "")] for i in range(len(self.columns))]
        right = [all(_numeric(cell) for cell in column) for column in filled]
        lines = [
            f"## {self.title}",
            "",
            "| " + " | ".join(_escape(c) for c in self.columns) + " |",
            "|" + "|".join("---:" if r else "---" for r in right) + "|",
        ]
        lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}


def format_cell(value: Cell) -> str:
    """A cell as Markdown: floats to 6 significant digits, NaN and None as a dash, text as given.

    A script that wants fewer digits passes the number already formatted, as text."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return _escape(str(value))


def _numeric(value: Cell) -> bool:
    """Right-align a column whose filled cells are all numbers (or numbers given as text)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value).replace(",", ""))
    except ValueError:
        return False
    return True


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 2**30
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def machine() -> dict:
    """CPU model, nproc (the CPUs this process may use, as `nproc` counts), all CPUs, memory."""
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "nproc": nproc,
        "cpus": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_revision(root: Path = ROOT) -> str:
    """HEAD's commit, with "+ uncommitted changes" when tracked files differ; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" + uncommitted changes" if dirty else "")


@dataclass
class Recording:
    """What is known when a benchmark starts; `write` adds the end and the results."""

    name: str
    command: str
    started: datetime.datetime
    load_at_start: float
    machine: dict = field(default_factory=machine)
    revision: str = field(default_factory=git_revision)
    out_dir: Path = BENCHMARKS_DIR

    def header(self, load_at_end: float) -> dict:
        return {
            "benchmark": self.name,
            "date_utc": self.started.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": self.machine,
            "load_average_1min": {"start": self.load_at_start, "end": load_at_end},
            "command": self.command,
            "git_revision": self.revision,
        }

    def write(self, tables: Sequence[Table], data: object = None, notes: Sequence[str] = ()) -> Path:
        """Write <out_dir>/<name>.md and .json atomically; returns the .md path."""
        header = self.header(os.getloadavg()[0])
        markdown = render(header, tables, notes)
        document = {"header": header, "tables": [t.as_dict() for t in tables], "notes": list(notes), "data": data}
        encoded = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        md_path, json_path = self.out_dir / f"{self.name}.md", self.out_dir / f"{self.name}.json"
        md_tmp, json_tmp = (p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (md_path, json_path))
        try:
            md_tmp.write_text(markdown)
            json_tmp.write_text(encoded)
            os.replace(json_tmp, json_path)
            os.replace(md_tmp, md_path)
        finally:
            md_tmp.unlink(missing_ok=True)
            json_tmp.unlink(missing_ok=True)
        print(f"recorded: {md_path}", file=sys.stderr)
        return md_path


def render(header: dict, tables: Sequence[Table], notes: Sequence[str] = ()) -> str:
    """The Markdown file: title, the conditions, then the tables and notes exactly as given."""
    m = header["machine"]
    load = header["load_average_1min"]
    lines = [
        f"# Benchmark: {header['benchmark']}",
        "",
        "Written by the command below through `bench/record.py`; rerun it, do not edit.",
        "",
        "| | |",
        "|---|---|",
        f"| date (UTC) | {header['date_utc']} |",
        f"| machine | {_escape(m['cpu_model'])}; nproc {m['nproc']} (of {m['cpus']} CPUs); "
        f"{m['memory_gib']:g} GiB memory; {_escape(m['platform'])}; Python {m['python']} |",
        f"| load average (1 min) | {load['start']:.2f} at start, {load['end']:.2f} at end |",
        f"| command | `{header['command']}` |",
        f"| git revision | {header['git_revision']} |",
        "",
    ]
    return "\n".join(lines) + "\n" + tables_markdown(tables, notes)


def tables_markdown(tables: Sequence[Table], notes: Sequence[str] = ()) -> str:
    """The results part alone: deterministic in the tables and notes (no clock, no machine)."""
    parts = [t.markdown() for t in tables]
    if notes:
        parts.append("\n".join(f"- {_escape(n)}" for n in notes) + "\n")
    return "\n".join(parts)


def add_record_argument(parser: argparse.ArgumentParser) -> None:
    """`--record` writes docs/benchmarks/<name>.md and .json; `--record DIR` writes them into DIR."""
    parser.add_argument(
        "--record",
        nargs="?",
        type=Path,
        const=BENCHMARKS_DIR,
        default=None,
        metavar="DIR",
        help="also write the results as DIR/<name>.md and .json with date, machine, load and command "
        "(default DIR: docs/benchmarks)",
    )


def start_recording(name: str, out_dir: Path | None = None, argv: Sequence[str] | None = None) -> Recording:
    """Call right after parsing arguments: notes the time, the load and the command line (sys.argv)."""
    command = shlex.join([sys.executable, *(sys.argv if argv is None else argv)])
    return Recording(
        name=name,
        command=command,
        started=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        load_at_start=os.getloadavg()[0],
        out_dir=BENCHMARKS_DIR if out_dir is None else out_dir,
    )
