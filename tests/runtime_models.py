"""Tiny random mlx-lm models for the runtime tests, saved as folders that ``mlx_lm.load`` reads.

Each folder holds a llama config (hidden 64, 2 layers), random weights, and a byte-level BPE
tokenizer trained here with ``tokenizers`` whose vocabulary includes ``<CALL>``, ``<EVIDENCE>``,
``</EVIDENCE>`` and ``<|endoftext|>``. Everything is seeded: the same folder on every run.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from lacy_mlx.tokens import CALL_TOKEN, END_OF_TEXT, EVIDENCE_END, EVIDENCE_START, LacySection, write_lacy_section

CORPUS = [
    "Marie Curie was born in Warsaw in 1867. She studied physics in Paris.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Alan Turing worked at Bletchley Park. He was born in London in 1912.",
    "Ada Lovelace wrote the first program. She lived in London.",
    "The river Seine flows through Paris. The Tiber flows through Rome.",
    "Question: where was Marie Curie born? Answer: Warsaw.",
] * 20

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 400) -> int:
    """Train a byte-level BPE tokenizer on :data:`CORPUS`, save it into ``folder``; return its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [END_OF_TEXT, CALL_TOKEN, EVIDENCE_START, EVIDENCE_END, "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": END_OF_TEXT,
        "bos_token": END_OF_TEXT,
        "unk_token": END_OF_TEXT,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 4096,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return tok.get_vocab_size()


def build_model(
    folder: str | Path,
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    vocab_size: int = 400,
    lacy_section: bool = True,
    tie: bool = False,
) -> Path:
    """Write a tiny random llama + tokenizer into ``folder``; return the folder.

    ``lacy_section`` writes the <CALL>/evidence ids into config.json; without it the runtime finds
    them in the tokenizer vocabulary.
    """
    from mlx_lm.models import llama

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = build_tokenizer(folder, vocab_size)
    config = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": n_vocab,
        "tie_word_embeddings": tie,
        "max_position_embeddings": 4096,
        "eos_token_id": 0,
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Larger random logits than the default init: the tiny model then has clear preferences.
    head_key = "model.embed_tokens.weight" if tie else "lm_head.weight"
    weights = dict(tree_flatten(model.parameters()))
    weights[head_key] = weights[head_key] * 8.0
    model.load_weights(list(weights.items()))
    mx.eval(model.parameters())
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    if lacy_section:
        vocab = _vocab(folder)
        write_lacy_section(
            folder,
            LacySection(
                call_token_id=vocab[CALL_TOKEN],
                evidence_start_id=vocab[EVIDENCE_START],
                evidence_end_id=vocab[EVIDENCE_END],
            ),
        )
    return folder


def _vocab(folder: Path) -> dict[str, int]:
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(data["model"]["vocab"])
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    return vocab


def boost_call(model, call_id: int, bias: float = 30.0) -> None:
    """Give ``model.lm_head`` a bias of ``bias`` on the <CALL> row, so p(<CALL>) is high at every step."""
    import mlx.nn as nn

    w = model.lm_head.weight  # (V, H)
    head = nn.Linear(w.shape[1], w.shape[0], bias=True)
    head.weight = w
    head.bias = mx.zeros((w.shape[0],)).at[call_id].add(bias)
    model.lm_head = head
    mx.eval(model.parameters())


def vocab_of(folder: Path) -> dict[str, int]:
    """The tokenizer vocabulary of a folder built here (added tokens included)."""
    return _vocab(Path(folder))


def check_context(model, context: list[int], n_prompt: int, specials: dict[str, int]) -> int:
    """Assert each token the SLM decoded in ``context`` (outside evidence) is the greedy token of one
    from-scratch forward pass over ``context``; returns how many were checked."""
    import numpy as np

    ids = {specials["<CALL>"], specials["<EVIDENCE>"], specials["</EVIDENCE>"]}
    logits = model(mx.array(context)[None])[0].astype(mx.float32)  # (T, V)
    greedy = np.array(mx.argmax(logits.at[:, sorted(ids)].add(-1e9), axis=-1))
    inside, checked = False, 0
    for i in range(n_prompt, len(context)):
        t = context[i]
        inside = inside or t == specials["<EVIDENCE>"]
        if not inside and t not in ids:
            assert greedy[i - 1] == t, f"position {i}: cached decoding diverged from a full prefill"
            checked += 1
        inside = inside and t != specials["</EVIDENCE>"]
    return checked
