"""Deliver nightly records: to MLflow when it takes them, else to the outbox; and `sync` it.

The caller is always told which happened (`Delivery.message`), and why a record went to the outbox.
Every kind of tracking failure keeps the record: a server that does not answer its health check, a
half-up one (health 200, API 5xx), a timeout, an error while the record is being logged (logging is
idempotent, so a half-uploaded record is safe to send again). `sync` uploads the outbox oldest first;
an entry it cannot read is skipped and named, and the others are still uploaded. Then it copies the
acceptances recorded only in the local nightly store onto their nightlies' MLflow runs (never twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from quantgate.core.errors import InputError
from quantgate.tracking import outbox
from quantgate.tracking.log import NightlyRuns, log_nightly
from quantgate.tracking.nightly_record import NightlyRecord
from quantgate.tracking.store import TrackingStore, client, failure_reason, reachable, state_dir


@dataclass(frozen=True)
class Delivery:
    runs: NightlyRuns | None  # None: kept in the outbox
    outbox_entry: Path | None
    message: str


def _try_log(store: TrackingStore, record: NightlyRecord) -> NightlyRuns | str:
    """The runs, or why the server did not take the record (down, half up, timing out, failing mid-way)."""
    from mlflow.exceptions import MlflowException

    if not reachable(store):
        return "unreachable"
    try:
        return log_nightly(client(store), store, record)
    except (MlflowException, OSError) as error:  # HTTP errors, 5xx, timeouts, connections lost (OSError)
        return failure_reason(error)


def deliver(store: TrackingStore, record: NightlyRecord, state: Path | None = None) -> Delivery:
    outcome = _try_log(store, record)
    if isinstance(outcome, NightlyRuns):
        return Delivery(
            outcome, None,
            f"logged nightly {record.nightly_id} to {store.uri} (parent run {outcome.parent_run_id})",
        )  # fmt: skip
    entry = outbox.put(record, state or state_dir())
    return Delivery(
        None,
        entry,
        f"tracking server {store.uri} did not take the record ({outcome}): nightly {record.nightly_id} kept in "
        f"{entry}; run `quantgate sync` when it is back",
    )


@dataclass(frozen=True)
class SyncOutcome:
    uploaded: list[str]  # nightly ids
    remaining: int  # entries still in the outbox (skipped ones included)
    message: str
    skipped: list[str] = field(default_factory=list)  # unreadable entries: "<record.json>: why"
    acceptances: list[str] = field(default_factory=list)  # local-only acceptances copied to MLflow
    acceptances_synced: bool = True  # False: the local acceptances could not be compared with MLflow's


def sync(store: TrackingStore, state: Path | None = None) -> SyncOutcome:
    """Upload every outbox entry, oldest first; an entry is removed only once it is logged. An
    unreadable entry is skipped (named in the message, left in place); the rest are uploaded."""
    state = state or state_dir()
    uploaded: list[str] = []
    skipped: list[str] = []
    entries = outbox.pending(state)
    for index, entry in enumerate(entries):
        try:
            record = outbox.read(entry)
        except InputError as error:
            skipped.append(str(error))
            continue
        outcome = _try_log(store, record)
        if not isinstance(outcome, NightlyRuns):
            remaining = len(entries) - index + len(skipped)
            message = f"tracking server {store.uri} did not take the records ({outcome}): {remaining} entry(ies) left"
            return SyncOutcome(uploaded, remaining, _with_skipped(message, skipped), skipped)
        outbox.remove(entry)
        uploaded.append(record.nightly_id)
    message = f"uploaded {len(uploaded)} outbox entry(ies) to {store.uri}"
    message += "; outbox empty" if not skipped else f"; {len(skipped)} skipped"
    copied, why = _copy_acceptances(store, state)
    if why:
        return SyncOutcome(uploaded, len(skipped), _with_skipped(message + f"; {why}", skipped), skipped, copied, False)
    message += "".join(f"\ncopied acceptance to MLflow: {line}" for line in copied)
    return SyncOutcome(uploaded, len(skipped), _with_skipped(message, skipped), skipped, copied)


def _copy_acceptances(store: TrackingStore, state: Path) -> tuple[list[str], str]:
    """Acceptances recorded only locally, copied to MLflow (ledger.upload_acceptances); or why not."""
    from mlflow.exceptions import MlflowException

    from quantgate.tracking.ledger import upload_acceptances

    if not reachable(store):
        return [], f"local acceptances not copied: tracking server {store.uri} unreachable"
    try:
        return upload_acceptances(store, state), ""
    except (MlflowException, OSError) as error:
        return [], f"local acceptances not copied: tracking server {store.uri} failed ({failure_reason(error)})"
    except InputError as error:  # an unreadable accepted.json
        return [], f"local acceptances not copied: {error}"


def _with_skipped(message: str, skipped: list[str]) -> str:
    return message + "".join(f"\nskipped unreadable outbox entry {reason}" for reason in skipped)
