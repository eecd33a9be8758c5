"""A byte-level BPE tokenizer trained with ``tokenizers`` and saved so that ``mlx_lm.load`` reads it.

The special tokens come first, in this order, so their ids are fixed for every vocabulary size:
``<|endoftext|>`` = 0, ``<CALL>`` = 1, ``<EVIDENCE>`` = 2, ``</EVIDENCE>`` = 3.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from lacy_mlx.tokens import CALL_TOKEN, END_OF_TEXT, EVIDENCE_END, EVIDENCE_START

SPECIALS = (END_OF_TEXT, CALL_TOKEN, EVIDENCE_START, EVIDENCE_END)


def train_bpe(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Train a byte-level BPE on ``texts``; specials get ids 0-3 (see the module docstring)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = _post_processor()  # set again: ids of the specials are known only now
    return tok


def _post_processor() -> processors.PostProcessor:
    # With add_special_tokens (mlx-lm's default for prompts), a text starts with <|endoftext|>, as
    # every training document does.
    return processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{END_OF_TEXT} $A", pair=f"{END_OF_TEXT} $A $B",
                                      special_tokens=[(END_OF_TEXT, 0)]),
    ])


def save_tokenizer(tok: Tokenizer, out_dir: str | Path) -> None:
    """Write ``tokenizer.json`` and a ``tokenizer_config.json`` that transformers' fast tokenizer reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                  "single_word": False, "special": True}
        for t in SPECIALS
    }
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": END_OF_TEXT,
        "eos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "pad_token": END_OF_TEXT,
        "additional_special_tokens": [CALL_TOKEN, EVIDENCE_START, EVIDENCE_END],
        "added_tokens_decoder": added,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The ``tokenizers`` object from a folder or a ``tokenizer.json`` path."""
    p = Path(path)
    return Tokenizer.from_file(str(p / "tokenizer.json" if p.is_dir() else p))
