"""Release marks in MLflow's model registry: a variant that passes every gate of a nightly gets a
model version of the registered model `<plan>.<variant>`, pointing at the variant's run of that
nightly (source `runs:/<run id>/suites`; the checkpoint's path and identity as version tags), with
the alias `candidate`; when the whole nightly passes (its release gate: every real variant passes
and every canary is caught), its passing versions also get the alias `release`.

Idempotent: a version is looked up by its run before one is made, so syncing or re-logging a
nightly adds no version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quantgate.tracking import names
from quantgate.tracking.nightly_record import NightlyRecord

if TYPE_CHECKING:
    from mlflow import MlflowClient

ALIAS_CANDIDATE = "candidate"
ALIAS_RELEASE = "release"


def registered_name(plan_name: str, variant: str) -> str:
    return f"{plan_name}.{variant}"  # the registry refuses "/" and ":" in names


def _version(client: MlflowClient, name: str, run_id: str, tags: dict[str, str]) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="quantgate: versions that passed every gate of a nightly")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if found:
        return found[0].version
    return client.create_model_version(name, f"runs:/{run_id}/suites", run_id=run_id, tags=tags).version


def register_passing(client: MlflowClient, record: NightlyRecord, runs: dict[str, str]) -> dict[str, str]:
    """Registered model name -> version, for every passing variant of the record with a logged run."""
    paths = {r.variant: r.model for r in record.results}
    registered = {}
    for info in record.checkpoints:
        if info.baseline or info.variant not in record.passing or info.checkpoint not in runs:
            continue
        name = registered_name(record.plan_name, info.variant)
        model = paths.get(info.checkpoint)
        tags = {names.TAG_NIGHTLY: record.nightly_id, names.TAG_CHECKPOINT: info.checkpoint}
        if model is not None:
            tags |= {"quantgate.checkpoint_path": model.path, "quantgate.checkpoint_identity": model.identity}
        version = _version(client, name, runs[info.checkpoint], tags)
        client.set_registered_model_alias(name, ALIAS_CANDIDATE, version)
        if record.verdict == "pass":
            client.set_registered_model_alias(name, ALIAS_RELEASE, version)
        registered[name] = version
    return registered
