"""Nightly records that could not reach the tracking server, kept on disk until `quantgate sync`.

An entry is a folder `state/outbox/<nightly id>-<plan hash>-<ns>/` holding record.json and, under
results/<index>/, copies of each result's uploaded files. It is written under a dot-name and renamed
into place, so an entry is either complete or invisible; removal renames it back to a dot-name
first, for the same reason.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.tracking.nightly_record import NightlyRecord

RECORD_NAME = "record.json"
RESULTS_DIR = "results"  # results/<index>/: the uploaded files of the record's index-th result


def outbox_dir(state: Path) -> Path:
    return state / "outbox"


def put(record: NightlyRecord, state: Path) -> Path:
    """Store `record` (and copies of its artifacts) as one outbox entry; returns the entry."""
    box = outbox_dir(state)
    return write_entry(record, box, f"{record.nightly_id}-{record.plan_hash[:12]}-{time.time_ns()}")


def write_entry(record: NightlyRecord, parent: Path, name: str) -> Path:
    """`parent/name/`: record.json and copies of the record's files, written whole (dot-name, then rename).
    The outbox's entries and the local nightly store's (tracking/ledger.py) are such folders."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    for index, result in enumerate(record.results):  # each result's uploaded files, by index
        for path in result.artifacts:
            target = tmp / RESULTS_DIR / str(index) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    reports = []
    for path in record.report_files:
        if path.is_file():
            target = tmp / "report" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            reports.append(Path("report") / path.name)
    stored = NightlyRecord(**{**vars(record), "report_files": reports})
    with open(tmp / RECORD_NAME, "w") as out:
        json.dump(stored.to_json(), out, indent=2, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, parent / name)
    return parent / name


def pending(state: Path) -> list[Path]:
    box = outbox_dir(state)
    if not box.is_dir():
        return []
    return sorted(p for p in box.iterdir() if p.is_dir() and not p.name.startswith("."))


def read(entry: Path) -> NightlyRecord:
    try:
        record = NightlyRecord.from_json(json.loads((entry / RECORD_NAME).read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:  # ValueError: pydantic's
        raise InputError(f"{entry / RECORD_NAME}: unreadable outbox entry ({error})") from None
    results = [r.at(entry / RESULTS_DIR / str(index)) for index, r in enumerate(record.results)]
    reports = [entry / p for p in record.report_files]
    return NightlyRecord(**{**vars(record), "results": results, "report_files": reports})


def remove(entry: Path) -> None:
    hidden = entry.with_name(f".{entry.name}.done")
    os.rename(entry, hidden)
    shutil.rmtree(hidden)
