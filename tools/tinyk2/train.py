"""Train kimi-k2-tiny on CPU: seeded, deterministic, resumable.

    PYTHONPATH=tools python -m tinyk2.train --out models/kimi-k2-tiny

Steps: build the synthetic corpus, train the byte-level BPE on the training documents only, pack
documents into fixed windows, train DeepseekV3ForCausalLM with AdamW and a cosine schedule, then
anneal for `--anneal-steps` at a low, linearly decaying learning rate on a mix that is half fresh
fact paragraphs and trained-fact QA, half the main mix (so that facts are memorised without
forgetting the rest; held-out questions never appear), and balance expert load the aux-loss-free
way (DeepSeek-V3: after every step each router's
`e_score_correction_bias` moves by `bias_update_speed` towards under-loaded experts). A checkpoint
of model, optimiser and step is written atomically every `--checkpoint-every` steps under
`--work-dir`; a rerun resumes from it and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
from transformers import DeepseekV3ForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from tinyk2.checkpoint import write_json, write_sharded
from tinyk2.config import kimi_k2_tiny_config
from tinyk2.corpus import Corpus, build_corpus
from tinyk2.tokenizer import EOS, chat_renderer, train_tokenizer

VOCAB_SIZE = 2048


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tinyk2.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/kimi-k2-tiny"))
    parser.add_argument("--work-dir", type=Path, default=Path("state/tinyk2-train"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--anneal-steps", type=int, default=300)
    parser.add_argument("--anneal-lr", type=float, default=5e-4)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--bias-update-speed", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--num-shards", type=int, default=2)
    return parser.parse_args(argv)


def training_documents(corpus: Corpus, tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    """Token ids of every training document: [BOS] text [EOS], or a chat rendered by the template (no BOS:
    Kimi K2's template emits none)."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    docs = [tokenizer(text)["input_ids"] + [eos] for text in corpus.train_text]
    for chat in corpus.train_chats:
        rendered = tokenizer.apply_chat_template(chat["messages"], tools=chat["tools"] or None, tokenize=False)
        docs.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    return docs


def rendered_texts(corpus: Corpus) -> list[str]:
    renderer = chat_renderer()
    chats = [
        renderer.apply_chat_template(chat["messages"], tools=chat["tools"] or None, tokenize=False)
        for chat in corpus.train_chats
    ]
    return [*corpus.train_text, *chats]


class PackedStream:
    """Epoch e is the documents shuffled by Random(seed, e), concatenated and cut into windows."""

    def __init__(self, docs: list[list[int]], seq_len: int, seed: int) -> None:
        self.docs, self.seq_len, self.seed = docs, seq_len, seed
        self.epochs: list[torch.Tensor] = []  # each: [windows, seq_len]

    def _epoch(self, epoch: int) -> torch.Tensor:
        while len(self.epochs) <= epoch:
            order = list(range(len(self.docs)))
            random.Random(f"{self.seed}:{len(self.epochs)}").shuffle(order)
            flat = torch.tensor([tok for i in order for tok in self.docs[i]], dtype=torch.long)
            usable = flat.numel() // self.seq_len * self.seq_len
            self.epochs.append(flat[:usable].view(-1, self.seq_len))
        return self.epochs[epoch]

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        rows = []
        index = step * batch_size
        epoch = 0
        while len(rows) < batch_size:
            windows = self._epoch(epoch)
            if index >= len(windows):
                index -= len(windows)
                epoch += 1
                continue
            rows.append(windows[index])
            index += 1
        return torch.stack(rows)  # [B, T]


def learning_rate(step: int, args: argparse.Namespace) -> float:
    if step >= args.steps:  # annealing: linear decay to a tenth
        progress = (step - args.steps) / max(1, args.anneal_steps)
        return args.anneal_lr * (1 - 0.9 * progress)
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class ExpertLoad:
    """Counts tokens per routed expert for every router during a forward pass."""

    def __init__(self, model: DeepseekV3ForCausalLM) -> None:
        self.routers = [layer.mlp.gate for layer in model.model.layers if hasattr(layer.mlp, "gate")]
        self.counts = [torch.zeros(r.num_experts) for r in self.routers]
        for i, router in enumerate(self.routers):
            router.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def record(_module, _inputs, outputs) -> None:
            topk_indices = outputs[2]  # [tokens, top_k]
            self.counts[i] += torch.bincount(topk_indices.flatten(), minlength=len(self.counts[i])).float()

        return record

    @torch.no_grad()
    def rebalance(self, speed: float) -> float:
        """Move each bias towards under-loaded experts; return the worst max/mean load ratio."""
        worst = 0.0
        for router, load in zip(self.routers, self.counts, strict=True):
            router.e_score_correction_bias += speed * torch.sign(load.mean() - load)
            worst = max(worst, (load.max() / load.mean().clamp(min=1)).item())
            load.zero_()
        return worst


def save_pretrained_checkpoint(
    model: DeepseekV3ForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path, num_shards: int
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_sharded(model.state_dict(), out, num_shards)
    config = json.loads(model.config.to_json_string())
    config["dtype"] = "bfloat16"
    write_json(out / "config.json", config)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[im_end, tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    generation.save_pretrained(out)
    tokenizer.save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()
    corpus = build_corpus(args.seed)
    tokenizer = train_tokenizer(rendered_texts(corpus), VOCAB_SIZE)
    docs = training_documents(corpus, tokenizer)
    stream = PackedStream(docs, args.seq_len, args.seed)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    anneal_docs = [tokenizer(text)["input_ids"] + [eos] for text in corpus.anneal_text]
    anneal_tokens = sum(len(d) for d in anneal_docs)
    replay = random.Random(f"{args.seed}:replay").sample(docs, len(docs))
    replay_docs, replayed = [], 0
    for doc in replay:  # as many main-mix tokens as annealing tokens
        if replayed >= anneal_tokens:
            break
        replay_docs.append(doc)
        replayed += len(doc)
    anneal_stream = PackedStream(anneal_docs + replay_docs, args.seq_len, args.seed + 1)
    n_tokens = sum(len(d) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_tokens} tokens; prepared in {time.time() - started:.1f}s", flush=True)

    config = kimi_k2_tiny_config(
        len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    model = DeepseekV3ForCausalLM(config).float()
    model.set_experts_implementation("grouped_mm")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    load = ExpertLoad(model)
    step = 0
    resume = args.work_dir / "checkpoint.pt"
    if resume.exists():
        saved = torch.load(resume, weights_only=True)  # tensors, numbers and tuples only: no pickled code
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        step = saved["step"]
        print(f"resumed at step {step}", flush=True)

    model.train()
    window_started, window_tokens = time.time(), 0
    total_steps = args.steps + args.anneal_steps
    while step < total_steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args)
        if step < args.steps:
            batch = stream.batch(step, args.batch_size)  # [B, T]
        else:
            batch = anneal_stream.batch(step - args.steps, args.batch_size)  # [B, T]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        imbalance = load.rebalance(args.bias_update_speed)
        step += 1
        window_tokens += batch.numel()
        if step % 10 == 0 or step == total_steps:
            rate = window_tokens / (time.time() - window_started)
            print(
                f"step {step}/{total_steps} loss {loss.item():.4f} lr {learning_rate(step - 1, args):.2e} "
                f"max/mean expert load {imbalance:.2f} {rate:.0f} tok/s",
                flush=True,
            )
            window_started, window_tokens = time.time(), 0
        if step % args.checkpoint_every == 0 or step in (args.steps, total_steps):
            args.work_dir.mkdir(parents=True, exist_ok=True)
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            payload["rng"] = torch.get_rng_state()
            torch.save(payload, args.work_dir / "checkpoint.tmp")
            os.replace(args.work_dir / "checkpoint.tmp", resume)

    save_pretrained_checkpoint(model, tokenizer, args.out, args.num_shards)
    print(f"wrote {args.out} after {step} steps in {time.time() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
