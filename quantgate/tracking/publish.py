"""Deliver nightly records: to MLflow when it can be reached, else to the outbox; and `sync` it.

The caller is always told which happened (`Delivery.message`). A record is written to the outbox
when the server does not answer its health check, or stops answering while the record is logged
(logging is idempotent, so a half-uploaded record is safe to send again).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantgate.tracking import outbox
from quantgate.tracking.log import NightlyRuns, log_nightly
from quantgate.tracking.nightly_record import NightlyRecord
from quantgate.tracking.store import TrackingStore, client, reachable, state_dir


@dataclass(frozen=True)
class Delivery:
    runs: NightlyRuns | None  # None: kept in the outbox
    outbox_entry: Path | None
    message: str


def _connection_lost(store: TrackingStore, error: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(error, (MlflowException, OSError)) and not reachable(store)


def _try_log(store: TrackingStore, record: NightlyRecord) -> NightlyRuns | None:
    """The runs, or None when the server cannot be reached (before or while logging)."""
    if not reachable(store):
        return None
    try:
        return log_nightly(client(store), store, record)
    except Exception as error:  # only a lost connection is absorbed; everything else is raised again
        if _connection_lost(store, error):
            return None
        raise


def deliver(store: TrackingStore, record: NightlyRecord, state: Path | None = None) -> Delivery:
    runs = _try_log(store, record)
    if runs is not None:
        return Delivery(
            runs, None, f"logged nightly {record.nightly_id} to {store.uri} (parent run {runs.parent_run_id})"
        )
    entry = outbox.put(record, state or state_dir())
    return Delivery(
        None,
        entry,
        f"tracking server {store.uri} unreachable: nightly {record.nightly_id} kept in {entry}; "
        "run `quantgate sync` when it is back",
    )


@dataclass(frozen=True)
class SyncOutcome:
    uploaded: list[str]  # nightly ids
    remaining: int
    message: str


def sync(store: TrackingStore, state: Path | None = None) -> SyncOutcome:
    """Upload every outbox entry, oldest first; an entry is removed only once it is logged."""
    state = state or state_dir()
    uploaded: list[str] = []
    entries = outbox.pending(state)
    for index, entry in enumerate(entries):
        record = outbox.read(entry)
        if _try_log(store, record) is None:
            remaining = len(entries) - index
            return SyncOutcome(
                uploaded,
                remaining,
                f"tracking server {store.uri} unreachable: {remaining} entry(ies) left in the outbox",
            )
        outbox.remove(entry)
        uploaded.append(record.nightly_id)
    return SyncOutcome(
        uploaded, 0, f"uploaded {len(uploaded)} outbox entry(ies) to {store.uri}; outbox empty"
    )
