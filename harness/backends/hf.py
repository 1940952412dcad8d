"""Backend `hf`: in-process transformers on CPU or GPU, BF16 or compressed-tensors checkpoints.

Compressed checkpoints are decompressed by transformers on load; with `dtype="float32"` every
parameter is upcast by hand (exact: bf16 and dequantized weights are representable in fp32),
because `.float()` is refused on a quantized model and dequantized experts would otherwise stay
bf16 and run about 2x slower on CPU.

A block-FP8 release (DeepSeek-V3/Kimi K2, quantgate.core.fp8) is loaded by dequantizing it here, to
the compute dtype: `weight.float() * scale` per block, then cast (to bfloat16 that is exactly
DeepSeek's reference conversion; float32 keeps the product). transformers 5.24's own FP8 loader
cannot (on CPU it dequantizes, but derives the block from the scale grid and refuses the partial
edge blocks of e.g. kv_a_proj_with_mqa [576, in]).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.backends.base import Window, WindowScores
from harness.backends.decoding import decode_batch, occurrences, row_seed
from quantgate.core.checkpoint import CONFIG_NAME, read_json_object
from quantgate.core.errors import InputError
from quantgate.core.families import family_of_checkpoint
from quantgate.core.fp8 import BlockFP8, block_fp8_of, dequantize_fp8, read_block_fp8

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _upcast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Floating-point parameters to `dtype` by hand (exact for bf16 and dequantized values)."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.data = parameter.data.to(dtype)


def _load_block_fp8(model_dir: Path, fp8: BlockFP8, dtype: torch.dtype) -> torch.nn.Module:
    """The model with every FP8 weight dequantized to `dtype` (its scales checked), through transformers'
    own loading of a state dict (which fuses the routed experts as it does from disk)."""
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    tensors, scales = read_block_fp8(model_dir, fp8)
    handles = {}

    def read(shard: str, name: str) -> torch.Tensor:
        if shard not in handles:
            handles[shard] = safe_open(model_dir / shard, framework="pt")
        tensor = handles[shard].get_tensor(name)
        if not bool(torch.isfinite(tensor.float() if tensor.element_size() == 1 else tensor).all()):
            raise InputError(f"{model_dir / shard}: tensor {name} contains NaN or Inf")
        return tensor

    state = {}
    for name, info in sorted(tensors.items()):
        tensor = read(info.shard, name)
        if name in scales:
            scale = read(scales[name].shard, scales[name].name)
            tensor = dequantize_fp8(tensor, scale, fp8.weight_block_size).to(dtype)  # [out, in]
        state[name] = tensor
    handles.clear()
    config = AutoConfig.from_pretrained(model_dir)
    del config.quantization_config  # the weights given are dequantized
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # what AutoModelForCausalLM would pick
    return model_class.from_pretrained(None, config=config, state_dict=state, dtype=dtype)


class HFBackend:
    name = "hf"

    def __init__(
        self, model_dir: Path, *, dtype: str = "float32", device: str = "cpu", threads: int | None = None,
        batch_size: int = 8, device_map: str | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model_dir, self.dtype, self.device, self.batch_size = Path(model_dir), dtype, device, batch_size
        family = family_of_checkpoint(self.model_dir)  # an unknown architecture fails here, in one line
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.fp8 = block_fp8_of(read_json_object(self.model_dir / CONFIG_NAME), self.model_dir / CONFIG_NAME)
        placed = {"device_map": device_map} if device_map else {}  # "auto": accelerate over every visible GPU
        if self.fp8 is not None:
            model = _load_block_fp8(self.model_dir, self.fp8, DTYPES[dtype]).eval()
            if device_map:
                raise InputError(f"{self.model_dir}: --device-map is not supported for a block-FP8 baseline")
        else:
            model = AutoModelForCausalLM.from_pretrained(
                self.model_dir, dtype=DTYPES[dtype], use_safetensors=True, **placed  # never unpickle a .bin
            ).eval()
        _upcast(model, DTYPES[dtype])  # packed integer weights (weight_packed, ...) are left as they are
        with torch.no_grad():  # compressed Linear modules (not the fused experts) decompress on their first forward
            model(input_ids=torch.tensor([[self.tokenizer.bos_token_id or 0]], device=model.device))
        _upcast(model, DTYPES[dtype])  # ... into the scales' dtype: upcast what that produced
        self.model = model if device_map else model.to(device)
        if device_map:  # inputs go where the embedding is
            self.device = str(model.device)
        blocks = [getattr(layer, family.moe_block) for layer in self.model.model.layers]
        self._routers = {  # transformers' routers return (logits, weights, selected experts [N, k])
            index: block.gate
            for index, block in enumerate(blocks)
            if family.router is not None and hasattr(block, "gate")  # dense layers have no router
        }

    # -- token handling -------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_bos)["input_ids"]

    def render_chat(self, messages: list[dict], tools: list[dict] | None) -> list[int]:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=True, return_dict=False
        )

    def describe(self) -> dict:
        description = {
            "backend": self.name, "model": str(self.model_dir), "device": self.device, "dtype": self.dtype,
            "threads": torch.get_num_threads(), "batch_size": self.batch_size, "cpu_count": os.cpu_count(),
        }
        if self.fp8 is not None:
            description["source_format"] = f"{self.fp8.describe()}, dequantized to {self.dtype}"
        return description

    # -- scoring ----------------------------------------------------------------------------------
    def _padded(self, sequences: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros(len(sequences), width, dtype=torch.long)
        for row, seq in enumerate(sequences):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, span] = torch.tensor(seq)
            mask[row, span] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def score_windows(self, windows: list[Window], top_k: int | None) -> list[WindowScores]:
        out: list[WindowScores] = []
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            router.register_forward_hook(lambda _m, _i, o, index=index: captured.__setitem__(index, o[2]))
            for index, router in self._routers.items()
        ]
        try:
            for start in range(0, len(windows), self.batch_size):
                chunk = windows[start : start + self.batch_size]
                ids, mask = self._padded([w.tokens for w in chunk], left=False)  # [B, T]
                logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
                batch, width = ids.shape
                routing = {i: t.view(batch, width, -1) for i, t in captured.items()}  # [B, T, top_k]
                for row, window in enumerate(chunk):
                    end = len(window.tokens)
                    positions = slice(end - window.scored - 1, end - 1)  # predictions of the scored tokens
                    row_logprobs = logprobs[row, positions]  # [S, V]
                    targets = ids[row, end - window.scored : end]  # [S]
                    if top_k is None:
                        top_values, top_ids = row_logprobs, torch.arange(row_logprobs.shape[-1]).expand_as(row_logprobs)
                    else:
                        top_values, top_ids = row_logprobs.topk(top_k, dim=-1)
                    out.append(WindowScores(
                        target_logprobs=row_logprobs.gather(-1, targets[:, None])[:, 0].cpu(),
                        top_ids=top_ids.cpu(),
                        top_logprobs=top_values.cpu(),
                        routing={
                            i: r[row, end - window.scored : end].sort(-1).values.cpu() for i, r in routing.items()
                        },
                    ))
        finally:
            for hook in hooks:
                hook.remove()
        return out

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            ids, mask = self._padded([ctx + cont for ctx, cont in chunk], left=False)
            logprobs = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
            for row, (context, continuation) in enumerate(chunk):
                positions = slice(len(context) - 1, len(context) + len(continuation) - 1)
                row_logprobs = logprobs[row, positions]  # [C, V]
                target = torch.tensor(continuation, device=row_logprobs.device)
                score = row_logprobs.gather(-1, target[:, None]).sum().item()
                results.append((score, bool((row_logprobs.argmax(-1) == target).all())))
        return results

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, stop: list[str], temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """Greedy (temperature 0) or sampled continuations; see `harness.backends.decoding`."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        vocab = self.tokenizer.get_vocab()
        stop_ids = {vocab[s] for s in stop if s in vocab} or {self.tokenizer.eos_token_id}
        generators = None
        if temperature > 0:
            generators = [
                torch.Generator().manual_seed(row_seed(seed or 0, prompt, k))
                for prompt, k in zip(prompts, occurrences(prompts), strict=True)
            ]
        texts: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            new_tokens = decode_batch(
                self.model, prompts[chunk], max_new_tokens, stop_ids, self.tokenizer.pad_token_id,
                temperature, generators[chunk] if generators else None,
            )
            for row in new_tokens:
                text = self.tokenizer.decode(row, skip_special_tokens=False).replace(self.tokenizer.pad_token, "")
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                texts.append(text[:cut] if cut >= 0 else text)
        return texts
