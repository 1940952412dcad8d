"""Byte-level BPE tokenizer for kimi-k2-tiny, trained here, with Kimi K2's special tokens and chat template."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "[BOS]", "[EOS]", "[PAD]"
KIMI_SPECIAL_TOKENS = (
    "<|im_system|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
)
SPECIAL_TOKENS = (BOS, EOS, PAD, *KIMI_SPECIAL_TOKENS)
CHAT_TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")


def chat_renderer() -> PreTrainedTokenizerFast:
    """A vocabulary-less tokenizer that only renders the chat template to text (to train the BPE on)."""
    return _wrap(_bpe_skeleton())


def _bpe_skeleton() -> Tokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(list(SPECIAL_TOKENS))
    return bpe


def train_tokenizer(documents: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `documents`; encoding adds [BOS]; the chat template emits none, as Kimi K2's."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(documents, trainer=trainer)
    bos_id = bpe.token_to_id(BOS)
    bpe.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return _wrap(bpe)


def _wrap(bpe: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(KIMI_SPECIAL_TOKENS),
        chat_template=CHAT_TEMPLATE_PATH.read_text(),
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
