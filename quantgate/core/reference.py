"""Model references: what `--model`, `--baseline` and a plan's `model`/`baseline`/`path` may name.

- a local checkpoint folder (config.json plus `model.safetensors.index.json` and its shards, or one
  `model.safetensors`), or that `model.safetensors` file itself;
- a Hugging Face repo id with an optional revision, `ORG/NAME[@REVISION]` (a branch, tag or commit),
  resolved to its snapshot folder in the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`).
  With `HF_HUB_OFFLINE=1` only the cache is read; otherwise a missing snapshot is downloaded with
  `huggingface_hub.snapshot_download`. Nothing from the repo is executed (no trust_remote_code).

A local path wins over a repo id of the same spelling. Errors are one line naming the reference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from quantgate.core.checkpoint import CONFIG_NAME, SINGLE_FILE_NAME
from quantgate.core.errors import InputError

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def resolve_reference(reference: str | Path, what: str = "--model") -> Path:
    """The local checkpoint folder that `reference` names."""
    text = str(reference)
    path = Path(text).expanduser()
    if path.is_file() and path.name == SINGLE_FILE_NAME:
        path = path.parent
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise InputError(f"{what} {text}: not a checkpoint directory (no {CONFIG_NAME}: {path / CONFIG_NAME})")
        return path
    found = REPO_ID.match(text)
    if found is None or text.startswith((".", "/", "~")):
        raise InputError(f"{what} {text}: no such checkpoint directory, nor a Hugging Face repo id (ORG/NAME[@REV])")
    return _hub_snapshot(found["repo"], found["revision"], what)


def _hub_snapshot(repo: str, revision: str | None, what: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # read at call time (huggingface_hub reads its constants once, at import)
    home = os.environ.get("HF_HOME") or Path(constants.default_home) / "huggingface"
    cache = os.environ.get("HF_HUB_CACHE") or str(Path(home) / "hub")
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    named = f"{repo}@{revision}" if revision else repo
    try:
        snapshot = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
    except LocalEntryNotFoundError:
        if offline:
            raise InputError(
                f"{what} {named}: not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set"
            ) from None
        try:
            snapshot = snapshot_download(repo, revision=revision, cache_dir=cache)
        except (RepositoryNotFoundError, GatedRepoError):
            raise InputError(f"{what} {named}: no such Hugging Face repo (or no access to it)") from None
        except RevisionNotFoundError:
            raise InputError(f"{what} {named}: the repo has no revision {revision!r}") from None
        except OSError as error:
            raise InputError(f"{what} {named}: download failed ({type(error).__name__}: {error})") from None
    path = Path(snapshot)
    if not (path / CONFIG_NAME).is_file():
        raise InputError(f"{what} {named}: the snapshot {path} has no {CONFIG_NAME}")
    return path
