"""The peer run of bench/gptq_vs_llmcompressor.py: llm-compressor's GPTQModifier oneshot.

Runs inside the llm-compressor venv (bench/setup_llmcompressor_venv.sh), never in quantgate's.
transformers 5 fuses the DeepseekV3 experts; llm-compressor's `linearize_moe` turns them into
per-expert Linear modules after loading so GPTQ can quantize each,
calibrated on exactly the token ids quantgate uses (a JSON list of rows), with quantgate's
compressed-tensors scheme and ignore list, then saved compressed. The spec may also set
`actorder: "none"` (the modifier's own default is static) and `dtype` (the model's dtype,
default bfloat16, as llm-compressor's examples load it).

Prints one JSON line: versions, import, load, oneshot and save seconds, and what was quantized.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llm-compressor GPTQModifier oneshot, for the benchmark")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spec", type=Path, required=True, help='JSON: {"scheme": {...}, "ignore": [...], ...}')
    parser.add_argument("--calibration", type=Path, required=True, help="JSON: token id rows [S][L]")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import torch
    from compressed_tensors.quantization import QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modeling.moe.linearize import linearize_moe
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    imported = time.perf_counter()
    spec = json.loads(args.spec.read_text())
    rows = json.loads(args.calibration.read_text())
    # load_quantizable_moe() (linearized loading) fails in this venv: transformers 5.17's patch
    # mapping imports every model module, and aria's needs torchvision, which is not installed.
    # linearize_moe() after a plain load is llm-compressor's documented post-load path instead.
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))  # the model's forward dtype (bf16: as shipped)
    model = linearize_moe(AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    loaded = time.perf_counter()
    dataset = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})
    recipe = GPTQModifier(
        config_groups={"group_0": QuantizationScheme.model_validate(spec["scheme"])},
        ignore=spec["ignore"],
        block_size=spec["block_size"],
        dampening_frac=spec["dampening"],
        # "none" turns the modifier's default (static) off; otherwise the scheme's actorder stands
        **({"actorder": None} if spec.get("actorder") == "none" else {}),
    )
    oneshot(
        model=model,
        dataset=dataset,
        recipe=recipe,
        num_calibration_samples=len(rows),
        max_seq_length=len(rows[0]),
        shuffle_calibration_samples=False,
        moe_calibrate_all_experts=spec["calibrate_all_experts"],
    )
    calibrated = time.perf_counter()
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    saved = time.perf_counter()
    quantized = sorted(
        name for name, module in model.named_modules() if getattr(module, "quantization_scheme", None) is not None
    )
    versions = {n: version(n) for n in ("llmcompressor", "compressed-tensors", "torch", "transformers")}
    print(json.dumps({
        "versions": versions, "import_s": imported - start, "load_s": loaded - imported,
        "oneshot_s": calibrated - loaded, "save_s": saved - calibrated,
        "quantized_modules": len(quantized), "quantized_experts": sum(".experts." in n for n in quantized),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
