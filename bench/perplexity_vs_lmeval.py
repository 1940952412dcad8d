"""Harness perplexity + KL + routing against lm-eval's rolling perplexity, on one loaded model.

    python bench/perplexity_vs_lmeval.py [--model DIR] [--suite perplexity] [--repeats 3] [--record [DIR]]

Both sides score the same documents with the same windows (the suite's context_length, stride ==
context_length) on the same in-memory model, batch 8, longest windows first. Timed per side: the
median of `repeats` runs after one warm-up run, tokens/s = scored tokens / seconds.
  lm-eval:  HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8).loglikelihood_rolling
  harness:  perplexity suite `measure_against` + `compare` against a baseline measured (and thus
            cached) once beforehand: perplexity, KL with percentiles, same top-1, delta p, routing.
Prints both rates, their ratio (harness / lm-eval) and whether the perplexities agree within 0.1 %.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from bench.record import Table, add_record_argument, start_recording  # noqa: E402
from harness.backends.hf import HFBackend  # noqa: E402
from harness.suites.loader import load_suite  # noqa: E402
from harness.suites.perplexity import KIND, read_documents  # noqa: E402


def timed(run, repeats: int) -> tuple[float, object]:
    """Median seconds over `repeats` runs after one warm-up run, and the last result."""
    result = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bundled = Path(os.environ.get("QUANTGATE_BUNDLED_MODEL", ROOT / "models" / "kimi-k2-tiny"))
    parser.add_argument("--model", type=Path, default=bundled)
    parser.add_argument("--suite", default="perplexity")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    add_record_argument(parser)
    args = parser.parse_args()
    recording = start_recording("perplexity_vs_lmeval", args.record) if args.record else None

    config = load_suite(args.suite)
    if config.stride != config.context_length:
        parser.error(f"{args.suite}: lm-eval's rolling windows need stride == context_length")
    backend = HFBackend(args.model, threads=args.threads, batch_size=8)
    documents = read_documents(config)
    requests = [Instance("loglikelihood_rolling", {}, (d["text"],), i) for i, d in enumerate(documents)]
    lm = HFLM(
        pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=8, max_length=config.context_length
    )

    with tempfile.TemporaryDirectory() as tmp:
        baseline = KIND.measure(config, backend, Path(tmp) / "baseline")  # the cached baseline

        def harness_run():
            measurement = KIND.measure_against(config, backend, Path(tmp) / "variant", baseline)
            return measurement, KIND.compare(config, measurement, baseline)

        harness_s, (measurement, _) = timed(harness_run, args.repeats)
    lm_eval_s, loglikelihoods = timed(
        lambda: lm.loglikelihood_rolling(requests, disable_tqdm=True), args.repeats
    )

    tokens = sum(row["tokens"] for row in measurement.samples)
    harness_ppl = {m.name: m.value for m in measurement.metrics}["perplexity"]
    lm_eval_ppl = math.exp(-sum(loglikelihoods) / tokens)
    agree = abs(harness_ppl / lm_eval_ppl - 1) < 1e-3
    conditions = (
        f"{args.model.name}, {len(documents)} documents, {tokens} tokens, "
        f"context {config.context_length}, batch 8, {backend.device}, {backend.dtype}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} after 1 warm-up, "
        f"top_k {config.top_k}"
    )
    print(f"conditions: {conditions}")
    print(f"lm-eval loglikelihood_rolling: {tokens / lm_eval_s:10.1f} tokens/s  perplexity {lm_eval_ppl:.6f}")
    print(f"harness ppl+KL+routing:        {tokens / harness_s:10.1f} tokens/s  perplexity {harness_ppl:.6f}")
    print(
        f"ratio harness/lm-eval: {lm_eval_s / harness_s:.2f}x; perplexities agree within 0.1 %: {agree} "
        f"(relative difference {harness_ppl / lm_eval_ppl - 1:+.2e})"
    )
    if recording:
        rows = [
            ("lm-eval loglikelihood_rolling", f"{tokens / lm_eval_s:.1f}", f"{lm_eval_ppl:.6f}"),
            ("harness perplexity + KL + routing", f"{tokens / harness_s:.1f}", f"{harness_ppl:.6f}"),
        ]
        notes = [
            f"ratio harness / lm-eval: {lm_eval_s / harness_s:.2f}x",
            f"perplexities agree within 0.1 %: {agree} (relative difference {harness_ppl / lm_eval_ppl - 1:+.2e})",
        ]
        data = {"conditions": conditions, "tokens": tokens, "lm_eval_s": lm_eval_s, "harness_s": harness_s,
                "lm_eval_perplexity": lm_eval_ppl, "harness_perplexity": harness_ppl}  # fmt: skip
        recording.write([Table(conditions, ("side", "tokens/s", "perplexity"), rows)], data=data, notes=notes)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
