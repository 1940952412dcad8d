"""Keys and tokens never reach a message: what a server echoes back is redacted."""

from __future__ import annotations

import pytest

from harness.backends.http_client import EndpointError
from quantgate.core.redact import redact
from quantgate.tracking.store import failure_reason

KEY = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    "echo",
    [
        f"HTTP 401: invalid key {KEY}",
        f'{{"error": "Authorization: Bearer {KEY} rejected"}}',
        f"api_key={KEY}&model=x",
        f"'token': '{KEY}'",
    ],
)
def test_an_echoed_key_is_redacted(echo, monkeypatch):
    monkeypatch.setenv("VENDOR_KEY", KEY)
    assert KEY not in str(EndpointError(f"POST http://h/v1/completions: {echo}"))
    assert KEY not in failure_reason(RuntimeError(echo))
    assert "***" in redact(echo)


def test_bearer_tokens_are_redacted_without_an_environment_variable():
    assert redact("Authorization: Bearer abc.def-ghi") == "Authorization: Bearer ***"


def test_ordinary_text_is_left_alone(monkeypatch):
    monkeypatch.setenv("SHORT_KEY", "ab")  # too short to redact safely
    text = "HTTP 503: backend down (ab testing)"
    assert redact(text) == text
