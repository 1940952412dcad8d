"""Keys and tokens out of every message: what a server echoes back must not reach a log or the outbox.

Bearer tokens, `api_key=...`/`token: ...` pairs, and the values of the environment variables named
like keys (`*KEY`, `*TOKEN`, `*SECRET`, `*PASSWORD`: where `--api-key-env` and `api_key_env` point) are
replaced by `***`.
"""

from __future__ import annotations

import os
import re

HIDDEN = "***"
SECRET_NAMES = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)
PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&}]+"),
)
MIN_SECRET_CHARS = 6  # shorter environment values would redact ordinary words


def redact(text: str) -> str:
    for name, value in os.environ.items():
        if SECRET_NAMES.search(name) and len(value) >= MIN_SECRET_CHARS:
            text = text.replace(value, HIDDEN)
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + HIDDEN, text)
    return text
