"""quantgate's K2-Vendor-Verifier metrics equal K2VV's own, on cases covering every K2VV rule.

`tests/data/k2vv_cases.json` holds the cases: chat-mode responses to the lines of a K2VV request file
(`_input` role, a malformed line, per-request max_tokens/temperature/stream), raw-mode streamed outputs,
and a reference run's finish reasons. The expected values below were computed by K2VV's own code
(MoonshotAI/K2-Vendor-Verifier tool_calls_eval.py at main 0bc5061, f1_score.py of PR #28), run outside the
project on these cases (a runner that feeds the responses to its ToolCallsValidator.validate_file, its
streamed raw-completions path and f1_score.compute_f1, no network), and are pinned here.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.toolcall.k2vv import read_requests, read_results, request_episode, result_line, write_results
from harness.toolcall.k2vv_rules import k2vv_response, schema_counts, trigger_f1
from harness.toolcall.loop import step
from harness.toolcall.metrics import k2vv_metrics
from harness.toolcall.parsers import EndpointText, parse_kimi_k2

CASES = json.loads((Path(__file__).resolve().parents[1] / "data" / "k2vv_cases.json").read_text())

# K2VV's results (data_index -> [finish_reason, tool_calls_valid]) for the chat cases; line 4 is malformed
K2VV_CHAT = {
    1: ["tool_calls", True], 2: ["tool_calls", False], 3: ["tool_calls", None], 5: ["stop", None],
    6: ["tool_calls", False], 7: ["tool_calls", False], 8: ["tool_calls", True], 9: ["tool_calls", False],
    10: ["tool_calls", False], 11: ["tool_calls", False], 12: ["tool_calls", False], 13: ["tool_calls", True],
    14: ["length", None], 15: ["stop", None],
}
K2VV_SUMMARY = {"finish_tool_calls": 11, "successful_tool_call_count": 3, "schema_validation_error_count": 8,
                "finish_stop": 2, "finish_others": 1}
# K2VV's streamed raw-completions path: [finish_reason, tool_calls_valid, extracted names]
K2VV_RAW = {
    "closed section, closed call": ["tool_calls", True, ["get_weather"]],
    "section not closed": ["stop", None, []],
    "empty closed section": ["stop", None, []],
    "call not closed": ["stop", None, []],
    "dotted namespace names ns": ["tool_calls", False, ["ns"]],
    "id without dot skipped": ["stop", None, []],
    "only the first section": ["tool_calls", True, ["get_weather"]],
    "digit-led name": ["tool_calls", True, ["3d_render"]],
    "plain text": ["stop", None, []],
    "invalid id then valid call": ["tool_calls", True, ["get_weather"]],
}
# f1_score.py: the chat results against the reference (TP=6 FP=5 FN=2 TN=1), and nothing triggered anywhere
K2VV_F1 = {"tool_call_precision": 6 / 11, "tool_call_recall": 0.75, "tool_call_f1": 0.631578947368421}


def _requests(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(CASES["request_lines"]) + "\n")
    return path, read_requests(path)


def _chat_rows(tmp_path: Path):
    """Each request as a single-step episode answered by its chat-mode response."""
    _, requests = _requests(tmp_path)
    by_case = {c["case"]: c for c in CASES["chat"]}
    rows = []
    for index, request in enumerate(requests.requests):
        case = by_case[request.messages[-1]["content"]]
        message = {"role": "assistant", "content": "", "tool_calls": case["tool_calls"]}
        episode = request_episode(request, index, 0)
        step(episode, EndpointText("", message, case["finish_reason"]), parse_kimi_k2)
        rows.append(episode.to_json() | {"source": "request", "success": None, "expected_trigger": None,
                                         "reference_tools": None})
    return requests, rows


def test_request_file_read_as_k2vv_reads_it(tmp_path):
    path, requests = _requests(tmp_path)
    assert [r.data_index for r in requests.requests] == sorted(K2VV_CHAT)
    assert requests.skipped == [f"{path}:4: not JSON: Expecting value"]
    assert [m["role"] for m in requests.requests[0].messages] == ["system", "user"]  # `_input` -> system
    first, second = (request_episode(r, i, 0) for i, r in enumerate(requests.requests[:2]))
    assert (first.max_new_tokens, first.temperature, first.stream) == (64, 0.6, True)
    assert second.stream is False
    overridden = request_episode(requests.requests[0], 0, 0, max_tokens=8, temperature=0.0)
    assert (overridden.max_new_tokens, overridden.temperature) == (8, 0.0)


def test_chat_mode_equals_k2vv(tmp_path):
    _, rows = _chat_rows(tmp_path)
    ours = {r["data_index"]: [r["k2vv"]["finish_reason"], r["k2vv"]["tool_calls_valid"]] for r in rows}
    print("K2VV:", K2VV_CHAT, "\nquantgate:", ours)
    assert ours == K2VV_CHAT
    counts = schema_counts([r["k2vv"] for r in rows])
    assert counts["count_finish_reason_tool_calls"] == K2VV_SUMMARY["finish_tool_calls"]
    assert counts["count_successful_tool_call"] == K2VV_SUMMARY["successful_tool_call_count"]
    assert counts["schema_accuracy"] == 3 / 11
    metrics = {m.name: m for m in k2vv_metrics(rows)}
    assert metrics["k2vv_schema_accuracy"].value == 3 / 11 and metrics["k2vv_schema_accuracy"].n == 11
    # quantgate's own per-call view of the same responses differs where K2VV's rules do
    by_case = {r["data_index"]: r for r in rows}
    assert [c["status"] for c in by_case[13]["calls"]] == ["malformed"]  # NaN: K2VV valid, quantgate malformed
    assert [c["status"] for c in by_case[6]["calls"]] == ["ok"]  # no `parameters`: K2VV invalid


def test_raw_mode_equals_k2vv():
    tools = CASES["tools"]
    for case in CASES["raw"]:
        record = k2vv_response(case["text"], tools)
        names = [c["function"]["name"] for c in record["message"]["tool_calls"] or []]
        got = [record["finish_reason"], record["tool_calls_valid"], names]
        print(f"{case['case']}: K2VV {K2VV_RAW[case['case']]} quantgate {got}")
        assert got == K2VV_RAW[case["case"]], case["case"]
    assert k2vv_response(CASES["raw"][0]["text"], tools, stream=False)["finish_reason"] == "stop"


def test_f1_equals_k2vv_and_results_files_round_trip(tmp_path):
    requests, rows = _chat_rows(tmp_path)
    results = tmp_path / "k2vv_results.jsonl"
    write_results(results, [result_line(r, row, "tiny") for r, row in zip(requests.requests, rows, strict=True)])
    read_back = read_results(results)
    assert read_back.skipped == [] and read_back.finish_reasons == {i: v[0] for i, v in K2VV_CHAT.items()}
    assert [[r["finish_reason"], r["tool_calls_valid"]] for r in read_back.records] == list(K2VV_CHAT.values())
    reference = tmp_path / "reference.jsonl"
    lines = [{"data_index": i, "finish_reason": f} for i, f in zip(
        sorted(K2VV_CHAT), CASES["reference_finish_reasons"], strict=True)]
    lines.append({"data_index": 99, "finish_reason": "tool_calls"})  # only in the reference: not matched
    reference.write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")
    ref = read_results(reference)
    assert ref.skipped == [f"{reference}:16: not JSON: Expecting value"]
    scores = trigger_f1(ref.finish_reasons, read_back.finish_reasons)
    print("K2VV F1:", K2VV_F1, "quantgate:", {k: scores[k] for k in K2VV_F1})
    assert (scores["tp"], scores["fp"], scores["fn"], scores["tn"], scores["matched"]) == (6, 5, 2, 1, 14)
    assert {k: scores[k] for k in K2VV_F1} == K2VV_F1
    nothing = {i: "stop" for i in sorted(K2VV_CHAT)[:4]}
    assert trigger_f1(nothing, nothing)["tool_call_f1"] == 0.0  # K2VV: 0 where quantgate's trigger_f1 gives 1
