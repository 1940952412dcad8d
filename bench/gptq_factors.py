"""Where quantgate's and llm-compressor's GPTQ differ in held-out KL: one factor at a time.

Same calibration token ids for every run (quantgate's default set, written to JSON for the peer),
the bundled model, one thread. From a base setting (quantgate's former defaults: dampening 0.1,
routed-only expert calibration, actorder static, block 128, minmax scales, float64 Hessian,
RTN for experts under 16 tokens), each quantgate row changes one option; each llm-compressor
row changes one of its GPTQModifier / oneshot settings from the same base. Every output is
scored on held-out text the calibration did not see (bench/gptq_heldout.py: rows 100..199 of
suites/data/tinyk2/heldout_text.jsonl): mean full-vocabulary KL against BF16 and perplexity.
An output whose packed tensors equal another row's bytes is marked as such (the factor changed
nothing on this calibration). The last quantgate row per scheme is the shipped default
(`GPTQOptions.for_scheme`).

    ~/.cache/quantgate/tox/test/bin/python bench/gptq_factors.py [--schemes kimi-k2-thinking-int4 ...]
        [--rows NAME ...] [--no-peer] [--json FILE] [--record [DIR]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.record import Table, add_record_argument, start_recording  # noqa: E402

SCHEMES = ("kimi-k2-thinking-int4", "w4a16-g128", "w3a16-g32")
# The base both tools start from: quantgate's defaults before issue 19.
BASE = {
    "dampening": 0.1, "calibrate_all_experts": False, "actorder": "static", "block_size": 128,
    "observer": "minmax", "hessian_dtype": "float64", "min_expert_tokens": 16,
}  # fmt: skip
QUANTGATE_ROWS: dict[str, dict] = {
    "base": {},
    "dampening 0.01": {"dampening": 0.01},
    "all-experts calibration": {"calibrate_all_experts": True},
    "actorder none": {"actorder": "none"},
    "block size 32": {"block_size": 32},
    "observer mse": {"observer": "mse"},
    "Hessian float32": {"hessian_dtype": "float32"},
    "min expert tokens 0 (GPTQ every routed expert)": {"min_expert_tokens": 0},
    "dampening 0.01 + all experts (llm-compressor's defaults)": {"dampening": 0.01, "calibrate_all_experts": True},
    "observer mse + all experts": {"observer": "mse", "calibrate_all_experts": True},
    "observer mse + dampening 0.01 + all experts": {
        "observer": "mse",
        "dampening": 0.01,
        "calibrate_all_experts": True,
    },  # fmt: skip
}
# Candidate defaults: dampening 0.01 with the factors that helped on some scheme.
QUANTGATE_ROWS |= {
    "dampening 0.01 + Hessian float32": {"dampening": 0.01, "hessian_dtype": "float32"},
    "dampening 0.01 + observer mse + Hessian float32": {
        "dampening": 0.01,
        "observer": "mse",
        "hessian_dtype": "float32",
    },
    "dampening 0.01 + actorder none + Hessian float32": {
        "dampening": 0.01,
        "actorder": "none",
        "hessian_dtype": "float32",
    },
}
PEER_DEFAULTS = "its defaults (dampening 0.01, all experts)"
PEER_ROWS: dict[str, dict] = {
    "base": {},
    "dampening 0.01": {"dampening": 0.01},
    "all-experts calibration": {"calibrate_all_experts": True},
    "actorder none": {"actorder": "none"},
    "observer mse": {"observer": "mse"},
    "float32 forward (quantgate's)": {"dtype": "float32"},
    PEER_DEFAULTS: {"dampening": 0.01, "calibrate_all_experts": True},
}


def _packed_digest(checkpoint: Path) -> str:
    """sha256 over the quantized tensors' bytes (names sorted): equal digests, equal quantized weights."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(shard, "pt") as handle:
            for name in sorted(k for k in handle.keys() if "weight_packed" in k or "weight_scale" in k):
                digest.update(name.encode())
                digest.update(handle.get_tensor(name).contiguous().view(-1).view(dtype=_u8()).numpy().tobytes())
    return digest.hexdigest()


def _u8():
    import torch

    return torch.uint8


def run_quantgate(model: Path, scheme: str, options: dict, out: Path, threads: int) -> float:
    from quant.gptq.run import GPTQRequest, quantize_gptq
    from quant.schemes import get_scheme
    from quantgate.core.gptq import GPTQOptions

    start = time.perf_counter()
    request = GPTQRequest(model, get_scheme(scheme), out=out, options=GPTQOptions(**options, threads=threads),
                          data_root=ROOT)  # fmt: skip
    quantize_gptq(request)
    return time.perf_counter() - start


def run_peer(model: Path, scheme: str, settings: dict, out: Path, work: Path, calibration: Path, threads: int) -> float:
    from gptq_vs_llmcompressor import peer_python

    from quant.gptq.run import gptq_scheme
    from quant.schemes import get_scheme
    from quantgate.core.gptq import GPTQOptions

    options = GPTQOptions(**{k: v for k, v in settings.items() if k in GPTQOptions.model_fields})
    resolved = gptq_scheme(get_scheme(scheme), options)
    weights = resolved.quantization.weights
    if settings.get("observer") == "mse":
        weights = weights.model_copy(update={"observer": "mse"})
    quantization = resolved.quantization.model_copy(update={"weights": weights})
    spec = {
        "scheme": quantization.model_dump(mode="json"), "ignore": list(resolved.ignore),
        "block_size": settings["block_size"], "dampening": settings["dampening"],
        "calibrate_all_experts": settings["calibrate_all_experts"], "actorder": settings["actorder"],
        "dtype": settings.get("dtype", "bfloat16"),
    }  # fmt: skip
    spec_path = work / f"{out.name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [
        str(peer_python()), str(ROOT / "bench/llmcompressor_gptq_peer.py"), "--model", str(model), "--out", str(out),
        "--spec", str(spec_path), "--calibration", str(calibration), "--threads", str(threads),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"llm-compressor failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/kimi-k2-tiny")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    parser.add_argument("--rows", nargs="+", default=None, help="only these row names (both tools; base is a row)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="results so far, rewritten after every row")
    parser.add_argument(
        "--merge", type=Path, nargs="+", default=[],
        help="--json files of earlier runs: their schemes' rows join this run's tables (runs split to fit a deadline)",
    )  # fmt: skip
    parser.add_argument("--note", action="append", default=[], help="a line for the record's notes (repeatable)")
    add_record_argument(parser)
    parser.add_argument("--record-name", default="gptq_factors",
                        help="the record's file name (a subset of --rows recorded beside the full table)")  # fmt: skip
    args = parser.parse_args(argv)
    recording = start_recording(args.record_name, args.record) if args.record else None

    import torch
    from gptq_heldout import kl_mean, perplexity, score

    from quant.build import QuantizeRequest, quantize
    from quant.gptq.calibration import build_calibration
    from quant.schemes import get_scheme
    from quantgate.core.gptq import CalibrationSpec, GPTQOptions

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gptq-factors-", dir=args.workdir))
    ids, calibration = build_calibration(CalibrationSpec(), args.model, ROOT)
    calibration_json = work / "calibration.json"
    calibration_json.write_text(json.dumps(ids.tolist()))
    baseline = score(args.model)
    wanted = set(args.rows) if args.rows else None
    results: dict[str, list[dict]] = {}
    merged_from = []
    for earlier in args.merge:
        document = json.loads(earlier.read_text())
        for scheme, rows in document["results"].items():  # the first run's row of a name stands
            known = {(r["tool"], r["row"]) for r in results.get(scheme, [])}
            results[scheme] = results.get(scheme, []) + [r for r in rows if (r["tool"], r["row"]) not in known]
        merged_from.append(document.get("command", str(earlier)))
    command = " ".join(sys.argv)

    def save() -> None:
        if args.json:
            document = {"results": results, "calibration": calibration.model_dump(), "command": command}
            args.json.write_text(json.dumps(document, indent=2) + "\n")

    for scheme in args.schemes:
        rows: list[dict] = [r for r in results.get(scheme, []) if r["tool"] != "RTN"]  # merged rows stay
        rtn_row = next((r for r in results.get(scheme, []) if r["tool"] == "RTN"), None)
        done = {(r["tool"], r["row"]) for r in rows}
        plan = [("quantgate", name, BASE | change) for name, change in QUANTGATE_ROWS.items()]
        shipped = GPTQOptions.for_scheme(scheme).model_dump(exclude={"threads", "batch_size", "routing_weighted"})
        plan.append(("quantgate", "shipped default", shipped))
        if not args.no_peer:
            plan += [("llm-compressor", name, BASE | change) for name, change in PEER_ROWS.items()]
        digests = {r["digest"]: f"{r['tool']}: {r['row']}" for r in reversed(rows) if "digest" in r}
        for number, (tool, name, settings) in enumerate(plan):
            if (wanted and name not in wanted) or (tool, name) in done:
                continue
            out = work / f"{scheme}-{tool}-{number}"
            try:
                if tool == "quantgate":
                    seconds = run_quantgate(args.model, scheme, settings, out, args.threads)
                else:
                    seconds = run_peer(args.model, scheme, settings, out, work, calibration_json, args.threads)
            except Exception as error:  # a failed row is a result, not the end of the table
                rows.append({"tool": tool, "row": name, "settings": settings, "error": str(error)[-600:]})
                print(f"{scheme:24} {tool:15} {name:55} ERROR {str(error)[-300:]}", flush=True)
                continue
            scores = score(out)
            digest = _packed_digest(out)
            row = {
                "tool": tool, "row": name, "settings": settings, "kl_mean": kl_mean(baseline, scores),
                "perplexity": perplexity(scores), "seconds": seconds,
                "same_bytes_as": digests.get(digest), "load": os.getloadavg()[0], "digest": digest,
            }  # fmt: skip
            digests.setdefault(digest, f"{tool}: {name}")
            rows.append(row)
            results[scheme] = rows
            save()
            print(f"{scheme:24} {tool:15} {name:55} KL {row['kl_mean']:.5f} PPL {row['perplexity']:.4f} "
                  f"{seconds:6.1f} s" + (f"  (same bytes as {row['same_bytes_as']})" if row["same_bytes_as"] else ""),
                  flush=True)  # fmt: skip
        if rtn_row is None:
            rtn = quantize(QuantizeRequest(args.model, get_scheme(scheme), out=work / f"{scheme}-rtn")).path
            rtn_scores = score(rtn)
            rtn_row = {"tool": "RTN", "row": "rtn", "settings": {}, "kl_mean": kl_mean(baseline, rtn_scores),
                       "perplexity": perplexity(rtn_scores)}  # fmt: skip
        rows.append(rtn_row)
        results[scheme] = rows
        save()
    tables, notes = _tables(results, calibration.sha256, perplexity(baseline))
    notes += [f"rows of an earlier run, merged: `{c}`" for c in merged_from] + args.note
    for table in tables:
        print(table.markdown())
    print("\n".join(notes))
    if recording:
        recording.write(tables, data={"results": results, "calibration": calibration.model_dump()}, notes=notes)
    return 0


def _summary(results: dict[str, list[dict]]) -> Table:
    """quantgate's shipped default against llm-compressor's defaults, llm-compressor at the same dampening
    (routed-only, as quantgate), and RTN."""
    rows = []
    for scheme, found in results.items():
        by = {(r["tool"], r["row"]): r for r in found if "kl_mean" in r}
        ours = by.get(("quantgate", "shipped default"))
        same_name = None
        if ours is not None:
            same_name = "base" if ours["settings"]["dampening"] == BASE["dampening"] else "dampening 0.01"
        peer_defaults, peer_same = by.get(("llm-compressor", PEER_DEFAULTS)), by.get(("llm-compressor", same_name))
        rtn = by.get(("RTN", "rtn"))

        def kl(row: dict | None) -> str | None:
            return None if row is None else f"{row['kl_mean']:.5f}"

        def at_most(row: dict | None, ours: dict | None = ours) -> bool | None:
            return None if row is None or ours is None else ours["kl_mean"] <= row["kl_mean"]

        rows.append((
            scheme, None if ours is None else ours["settings"]["dampening"], kl(ours), kl(peer_defaults),
            at_most(peer_defaults), kl(peer_same), at_most(peer_same), kl(rtn),
            None if ours is None else f"{ours['perplexity']:.4f}", None if rtn is None else f"{rtn['perplexity']:.4f}",
        ))  # fmt: skip
    return Table(
        "quantgate's shipped GPTQ default against llm-compressor 0.14 GPTQModifier: held-out KL vs BF16",
        ("scheme", "quantgate dampening", "quantgate KL", "llm-compressor defaults KL", "quantgate <=",
         "llm-compressor same dampening, routed-only KL", "quantgate <=", "RTN KL", "quantgate PPL", "RTN PPL"),
        rows,
    )  # fmt: skip


def _tables(results: dict[str, list[dict]], sha256: str, bf16_ppl: float) -> tuple[list[Table], list[str]]:
    tables = [_summary(results)]
    notes = [f"calibration: quantgate's default set, 64 x 256 tokens, sha256 {sha256[:12]}; "
             f"BF16 held-out perplexity {bf16_ppl:.4f}; one thread per tool"]  # fmt: skip
    for scheme, rows in results.items():
        base = {r["tool"]: r["kl_mean"] for r in rows if r["row"] == "base" and "kl_mean" in r}
        peer_base = base.get("llm-compressor")
        peer_defaults = next((r["kl_mean"] for r in rows if r["row"] == PEER_DEFAULTS and "kl_mean" in r), None)
        table_rows = []
        for r in rows:
            if "error" in r:
                table_rows.append((r["tool"], r["row"], None, None, None, None, None, "error: " + r["error"][:120]))
                continue
            against = base.get(r["tool"])
            change = None if against is None or r["tool"] == "RTN" else f"{100 * (r['kl_mean'] / against - 1):+.1f} %"
            vs_peer = None if peer_base is None else f"{r['kl_mean'] / peer_base:.3f}"
            vs_defaults = None if peer_defaults is None else f"{r['kl_mean'] / peer_defaults:.3f}"
            same = f"same bytes as {r['same_bytes_as']}" if r.get("same_bytes_as") else ""
            table_rows.append((r["tool"], r["row"], f"{r['kl_mean']:.5f}", change, vs_peer, vs_defaults,
                               f"{r['perplexity']:.4f}", same))  # fmt: skip
        tables.append(Table(
            f"{scheme}: held-out KL vs BF16, one factor at a time",
            ("tool", "setting", "KL", "KL vs the tool's base", "KL / llm-compressor base",
             "KL / llm-compressor defaults", "PPL", "note"),
            table_rows,
        ))  # fmt: skip
    return tables, notes


if __name__ == "__main__":
    raise SystemExit(main())
