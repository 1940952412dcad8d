"""Make `kimi-k2-tiny-fp8`: the bundled model stored as DeepSeek-V3 / Kimi K2 releases ship, block FP8.

Layout of those releases, reproduced here:
- FP8 (float8_e4m3fn, `NAME.weight`) with `NAME.weight_scale_inv` (float32, one value per 128x128
  block, [ceil(out/128), ceil(in/128)], edge blocks partial), both in the weight's shard: every
  Linear of the decoder layers, i.e. attention (q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj,
  o_proj), the dense MLP and the routed and shared experts (`*_proj.weight`);
- BF16 as before: embed_tokens, every norm, the router (`mlp.gate.weight`, its float32
  `e_score_correction_bias`) and lm_head;
- config.json gains `quantization_config: {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic,
  weight_block_size: [128, 128]}`; the index lists the scales; same shard files as the source.

Each block is quantized as DeepSeek's `kernel.weight_quant` does (quantgate.core.fp8.quantize_fp8:
scale = amax(|x|) / 448 over the block in float32, stored as `weight_scale_inv`, FP8 = x / scale).
The bundled model's kv_a_proj_with_mqa is [576, 128], so its last row block is a partial one (64 rows).

    python -m tinyk2.make_fp8 --model models/kimi-k2-tiny --out /tmp/kimi-k2-tiny-fp8
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quantgate.core.fp8 import quantize_fp8, scale_name

INDEX = "model.safetensors.index.json"
BLOCK = (128, 128)
FP8_LINEAR = re.compile(r"^model\.layers\.\d+\..*_proj(_with_mqa)?\.weight$")  # every decoder-layer Linear
QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": list(BLOCK),
}
SIDE_FILES = ("chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def make_fp8(model: Path, out: Path) -> Path:
    """Write the FP8 release layout of BF16 checkpoint `model` into `out` (which must not exist)."""
    out.mkdir(parents=True)
    index = json.loads((model / INDEX).read_text())
    weight_map: dict[str, str] = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(model / shard, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if FP8_LINEAR.match(name):
                    tensors[name], tensors[scale_name(name)] = quantize_fp8(tensor, BLOCK)
                else:
                    tensors[name] = tensor
        save_file(tensors, out / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    total = sum((out / shard).stat().st_size for shard in set(weight_map.values()))
    (out / INDEX).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
    )
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = QUANTIZATION_CONFIG
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in SIDE_FILES:
        if (model / name).is_file():
            shutil.copyfile(model / name, out / name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the BF16 checkpoint (models/kimi-k2-tiny)")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the FP8 checkpoint")
    args = parser.parse_args()
    print(f"wrote {make_fp8(args.model, args.out)}")


if __name__ == "__main__":
    main()
