"""A history gate against a small planted fault, on the bundled model's full held-out perplexity suite.

Three nightlies of a one-variant plan (the INT4-experts variant as a `path:` checkpoint, with the shipped
plan's INT4-group thresholds beside history gates): n1 (first: nothing to compare with), n2 (unchanged:
identical), then one routed expert's down_proj scales x SCALE (layer 3, expert 5) and n3. Prints and
records every gate row of n2 and n3: value, previous value, detectable regression, verdict.

    python bench/history_gate_perturbation.py [--documents N] [--scale 2.0] [--record [DIR]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.record import Table, add_record_argument, start_recording  # noqa: E402

EXPERT_SCALES = "model.layers.3.mlp.experts.5.down_proj.weight_scale"
SUITE = """kind: perplexity
version: 1
data: {data}
context_length: 128
stride: 128
top_k: 64
batch_size: 8
max_documents: {documents}
"""
PLAN = """version: 1
name: history-perturbation
model: {model}
variants:
  - {{name: int4, path: int4, group: int4-experts}}
suites: [ppl.yaml]
gates:
  - {{metric: ppl.perplexity, min_recovery: 99.5, history: {{}}}}
  - {{metric: ppl.kl_mean, max_value: 0.004, history: {{}}}}
  - {{metric: ppl.same_top1, min_value: 97.5, history: {{}}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=200, help="held-out documents (the suite has 200)")
    parser.add_argument("--scale", type=float, default=2.0, help="factor on the expert's down_proj scales")
    add_record_argument(parser)
    args = parser.parse_args()
    recording = start_recording("history_gate_perturbation", args.record) if args.record else None

    from safetensors.torch import load_file, save_file

    from quant.build import QuantizeRequest, quantize
    from quant.schemes import get_scheme
    from quantgate.core.checkpoint import MANIFEST_NAME
    from quantgate.nightly.matrix import Shard
    from quantgate.nightly.run import NightlyRequest, run_nightly

    model = ROOT / "models" / "kimi-k2-tiny"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["QUANTGATE_STATE_DIR"] = str(work / "state")  # sqlite store and its artifacts under tmp
        made = quantize(QuantizeRequest(model, get_scheme("kimi-k2-thinking-int4"), out=work / "made")).path
        shutil.copytree(made, work / "int4", ignore=shutil.ignore_patterns(MANIFEST_NAME))
        data = ROOT / "suites" / "data" / "tinyk2" / "heldout_text.jsonl"
        (work / "ppl.yaml").write_text(SUITE.format(data=data, documents=args.documents))
        (work / "plan.yaml").write_text(PLAN.format(model=model))

        def nightly(nightly_id: str) -> None:
            outcome = run_nightly(NightlyRequest(
                plan_path=work / "plan.yaml", shard=Shard(1, 1), state=work / "state", reports=work / "reports",
                cache_dir=work / "cache", nightly_id=nightly_id,  # MLflow: the embedded store in QUANTGATE_STATE_DIR
            ))  # fmt: skip
            for row in outcome.gates.rows:
                detectable = None if row.detectable is None else f"{row.detectable:.3g}"
                rows.append((nightly_id, row.metric, row.gate, row.value, row.previous, detectable,
                             row.verdict, row.reason))  # fmt: skip
                print(nightly_id, row.metric, row.gate, row.verdict, row.reason)

        nightly("n1")
        nightly("n2")
        for shard in sorted((work / "int4").glob("*.safetensors")):
            tensors = load_file(shard)
            if EXPERT_SCALES in tensors:
                tensors[EXPERT_SCALES] = (tensors[EXPERT_SCALES].float() * args.scale).to(tensors[EXPERT_SCALES].dtype)
                save_file(tensors, shard, metadata={"format": "pt"})
        nightly("n3")
    if recording:
        columns = ("nightly", "metric", "gate", "value", "previous", "detectable", "verdict", "reason")
        recording.write(
            [Table("gate rows", columns, tuple(r for r in rows if r[0] != "n1"))],
            data={"documents": args.documents, "scale": args.scale, "expert": EXPERT_SCALES},
            notes=[f"n3: {EXPERT_SCALES} x {args.scale} after n2; MLflow: sqlite in a temporary folder"],
        )


if __name__ == "__main__":
    main()
