"""bench/record.py: the header every recorded benchmark carries, deterministic tables, atomic files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from record import ROOT, Table, start_recording, tables_markdown

ARGV = ["bench/demo.py", "--record", "--label", "two words"]
TABLES = [
    Table(
        "runs",
        ("tool", "wall s", "peak RSS GB", "outputs"),
        [("quantgate", 20.7, 0.46, "bit-equal"), ("peer", 76.9, 3.26, None)],
    ),
    Table("ratios", ("ratio", "int4"), [("speedup", "3.63"), ("rss | shard", 0.4561234567)]),
]
EXPECTED_TABLES = """## runs

| tool | wall s | peak RSS GB | outputs |
|---|---:|---:|---|
| quantgate | 20.7 | 0.46 | bit-equal |
| peer | 76.9 | 3.26 | – |

## ratios

| ratio | int4 |
|---|---:|
| speedup | 3.63 |
| rss \\| shard | 0.456123 |

- load 0.8 at start
"""


def _record(out_dir: Path, data: object = None) -> Path:
    return start_recording("demo", out_dir, argv=ARGV).write(TABLES, data=data, notes=["load 0.8 at start"])


def test_header_has_date_machine_load_command_and_revision(tmp_path: Path) -> None:
    md_path = _record(tmp_path, data={"wall_s": [20.7, 76.9]})
    markdown = md_path.read_text()
    document = json.loads((tmp_path / "demo.json").read_text())
    header = document["header"]

    assert md_path == tmp_path / "demo.md"
    assert re.search(r"^\| date \(UTC\) \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \|$", markdown, re.M)
    nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    assert header["machine"]["nproc"] == nproc
    assert f"nproc {nproc} (of " in markdown
    assert header["machine"]["cpu_model"] in markdown and header["machine"]["cpu_model"]
    assert f"{header['machine']['memory_gib']:g} GiB memory" in markdown and header["machine"]["memory_gib"] > 0
    load = header["load_average_1min"]
    assert f"| load average (1 min) | {load['start']:.2f} at start, {load['end']:.2f} at end |" in markdown
    assert header["command"].endswith("bench/demo.py --record --label 'two words'")
    assert f"| command | `{header['command']}` |" in markdown
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert header["git_revision"].startswith(head.strip()) and len(head.strip()) == 40
    assert f"| git revision | {header['git_revision']} |" in markdown
    assert markdown.endswith("|\n\n" + EXPECTED_TABLES)  # a blank line after the header's table
    assert document["tables"][0] == {
        "title": "runs",
        "columns": ["tool", "wall s", "peak RSS GB", "outputs"],
        "rows": [["quantgate", 20.7, 0.46, "bit-equal"], ["peer", 76.9, 3.26, None]],
    }
    assert document["data"] == {"wall_s": [20.7, 76.9]}


def test_same_values_give_the_same_table_bytes(tmp_path: Path) -> None:
    first = _record(tmp_path / "a").read_bytes()
    second = _record(tmp_path / "b").read_bytes()
    tables = EXPECTED_TABLES.encode()
    assert tables_markdown(TABLES, ["load 0.8 at start"]).encode() == tables
    assert first.endswith(tables) and second.endswith(tables)


def test_a_failed_write_leaves_the_old_files_whole(tmp_path: Path) -> None:
    (tmp_path / "demo.md").write_text("old report\n")
    (tmp_path / "demo.json").mkdir()  # the .json cannot be replaced: the write fails midway
    with pytest.raises(OSError):
        _record(tmp_path)
    assert (tmp_path / "demo.md").read_text() == "old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.md"]  # no temporary left


def test_unencodable_data_writes_nothing(tmp_path: Path) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text form")

    with pytest.raises(RuntimeError, match="no text form"):
        _record(tmp_path, data={"x": Unprintable()})
    assert list(tmp_path.iterdir()) == []


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="table 'runs': row 1 has 1 cells, 2 columns"):
        Table("runs", ("tool", "wall s"), [("quantgate", 1.0), ("peer",)])


def test_a_bench_script_records_its_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/quantize_throughput.py --record DIR at a tiny size, quantgate only: the measured run lands in DIR."""
    from quantize_throughput import main as throughput_main

    argv = ["--size-gb", "0.02", "--shard-gb", "0.01", "--workers", "1", "--skip-peer"]
    argv += ["--schemes", "kimi-k2-thinking-int4", "--workdir", str(tmp_path / "work"), "--record", str(tmp_path)]
    monkeypatch.setattr("sys.argv", ["bench/quantize_throughput.py", *argv])
    assert throughput_main(argv) == 0
    markdown = (tmp_path / "quantize_throughput.md").read_text()
    document = json.loads((tmp_path / "quantize_throughput.json").read_text())
    run = document["data"]["schemes"][0]["runs"]["quantgate"]
    assert document["header"]["command"].endswith("bench/quantize_throughput.py " + " ".join(argv))
    assert f"| kimi-k2-thinking-int4 | quantgate | {run['wall_s']:.1f} | {run['sync_s']:.1f} |" in markdown
    assert "| kimi-k2-thinking-int4 | peak RSS / shard size |" in markdown
    assert "## ratios" in markdown and "start-up (interpreter + imports, cold page cache): quantgate" in markdown
