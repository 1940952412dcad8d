"""The result record: one typed, versioned shape; older files read by migration, others refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantgate.core.errors import InputError
from quantgate.core.metrics import Metric
from quantgate.core.record import RESULT_FILE, ModelRef, ResultRecord, read_record, read_results, write_record

V1_SUMMARY = {  # what quantgate 0.1's harness wrote: no version
    "model": {"path": "/m/tiny-int4", "identity": "manifest:ab", "role": "variant"},
    "suite": {"name": "perplexity", "kind": "perplexity", "version": 3, "top_k": 64},
    "baseline": {"path": "/m/tiny", "identity": "files:cd", "role": "baseline", "cache_key": "k"},
    "metrics": [{"name": "perplexity", "value": 2.5, "direction": "lower", "stderr": 0.1, "unit": "", "n": 10}],
    "comparison": [{"name": "kl_mean", "value": 0.002, "direction": "lower", "stderr": None, "unit": "nats", "n": 10}],
    "by_layer": {"0": {"routing_same_experts": 0.9}},
    "details": {"tokens": 10},
}


def _record() -> ResultRecord:
    return ResultRecord(
        model=ModelRef(path="/m/tiny-int4", identity="manifest:ab", role="variant"),
        suite={"name": "perplexity", "kind": "perplexity", "version": 3},
        baseline=ModelRef(path="/m/tiny", identity="files:cd", role="baseline", cache_key="k"),
        metrics=[Metric("perplexity", 2.5, "lower", 0.1, n=10)],
        comparison=[Metric("kl_mean", 0.002, "lower", unit="nats", n=10)],
    )


def test_round_trip_is_byte_stable(tmp_path: Path) -> None:
    write_record(tmp_path, _record())
    back = read_record(tmp_path)
    assert back.model_dump() == _record().model_dump() and back.folder == tmp_path
    assert (back.variant, back.suite, back.suite_version, back.role) == ("tiny-int4", "perplexity", 3, "variant")
    assert back.metric("kl_mean").value == 0.002
    first = (tmp_path / RESULT_FILE).read_bytes()
    write_record(tmp_path, back)
    assert (tmp_path / RESULT_FILE).read_bytes() == first
    assert json.loads(first)["version"] == 2


def test_version_1_is_read_by_migration(tmp_path: Path) -> None:
    (tmp_path / RESULT_FILE).write_text(json.dumps(V1_SUMMARY))
    record = read_record(tmp_path)
    assert record.version == 2 and record.suite_config["top_k"] == 64
    assert record.baseline.cache_key == "k" and record.by_layer == {"0": {"routing_same_experts": 0.9}}
    assert record.metric("perplexity") == Metric("perplexity", 2.5, "lower", 0.1, "", 10)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 3}, "result record version 3; this quantgate reads 1 and 2"),
        ({"metrics": [{"name": "p", "value": float("nan"), "direction": "lower"}]}, "metric 'p' is NaN"),
        ({"comparison": V1_SUMMARY["metrics"]}, "metric names repeat: perplexity"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"model": {"path": "x", "role": "judge", "identity": "i"}}, "model.role"),
    ],
)
def test_bad_records_are_refused_naming_the_file(tmp_path: Path, change: dict, message: str) -> None:
    (tmp_path / RESULT_FILE).write_text(json.dumps(V1_SUMMARY | change))
    with pytest.raises(InputError) as error:
        read_record(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / RESULT_FILE}: ") and message in str(error.value)


def test_not_json_and_not_utf8(tmp_path: Path) -> None:
    (tmp_path / RESULT_FILE).write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="not UTF-8"):
        read_record(tmp_path)
    (tmp_path / RESULT_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="a JSON object expected"):
        read_record(tmp_path)


def test_read_results_refuses_two_results_of_one_pair(tmp_path: Path) -> None:
    for folder in ("a/perplexity", "b/perplexity"):
        (tmp_path / folder).mkdir(parents=True)
        write_record(tmp_path / folder, _record())
    with pytest.raises(InputError, match="a second result for tiny-int4/perplexity"):
        read_results(tmp_path)
