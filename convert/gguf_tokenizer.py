"""Rebuild a GGUF file's tokenizer as a Hugging Face ``tokenizer.json`` with the tokenizers library.

GGUF stores the vocabulary (``tokenizer.ggml.tokens``), BPE merges or SentencePiece scores, token
types and the name of llama.cpp's pre-tokenizer (``tokenizer.ggml.pre``). llama.cpp is the
reference: its pre-tokenizers are lists of regexes applied one after the other, each splitting
the pieces the previous one left, which is what a sequence of "isolated" ``Split`` steps does.
Measured on SmolLM2's file, this matched llama.cpp's ids where transformers' own GGUF tokenizer
conversion did not (whitespace before digits).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConvertError
from .gguf_file import GGUFHeader

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DEFAULT = (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]")

# llama.cpp pre-tokenizer names -> the regexes it applies in order (and whether whole words in the
# vocabulary skip the merges, as llama.cpp's llama3 pre-tokenizer does).
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {
    **{name: ((_GPT2,), False) for name in ("gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion")},
    **{name: ((r"\p{N}", _GPT2), False)
       for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")},
    **{name: ((_QWEN2,), False) for name in ("qwen2", "qwen2.5", "qwen-2.5", "deepseek-r1-qwen", "stablelm2")},
    **{name: ((_LLAMA3,), True) for name in ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")},
    "default": (_DEFAULT, False),
}
_CONTROL, _USER_DEFINED, _UNKNOWN = 3, 4, 2
# Token texts llama.cpp treats as end of turn when the file does not name them.
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>")


def build_tokenizer(header: GGUFHeader) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to the file's, or ConvertError naming what is missing."""
    meta = header.metadata
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ConvertError(f"{header.path}: the GGUF metadata has no tokenizer (tokenizer.ggml.tokens)")
    if kind == "gpt2":
        tok = _byte_level_bpe(header, tokens)
    elif kind == "llama":
        tok = _sentencepiece_bpe(header, tokens)
    else:
        raise ConvertError(
            f"{header.path}: tokenizer type {kind!r} is not supported; GGUF files with a byte-level BPE "
            "('gpt2') or SentencePiece BPE ('llama') tokenizer convert"
        )
    _add_special_tokens(tok, header, tokens)
    _post_processor(tok, header, tokens)
    return tok


def _byte_level_bpe(header: GGUFHeader, tokens: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = str(header.metadata.get("tokenizer.ggml.pre", "default"))
    if pre not in PRE_TOKENIZERS:
        raise ConvertError(
            f"{header.path}: llama.cpp pre-tokenizer {pre!r} is not supported; supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    regexes, ignore_merges = PRE_TOKENIZERS[pre]
    merges = [_split_merge(m) for m in header.metadata.get("tokenizer.ggml.merges", [])]
    vocab = {text: i for i, text in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    return tok


def _split_merge(merge: str) -> tuple[str, str]:
    """'a b' -> ('a', 'b'); the first space after position 0 separates, as llama.cpp reads it."""
    cut = merge.find(" ", 1)
    return (merge[:cut], merge[cut + 1:]) if cut > 0 else (merge, "")


def _sentencepiece_bpe(header: GGUFHeader, tokens: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers

    meta = header.metadata
    scores = meta.get("tokenizer.ggml.scores")
    vocab = {text: i for i, text in enumerate(tokens)}
    if meta.get("tokenizer.ggml.merges"):
        merges = [_split_merge(m) for m in meta["tokenizer.ggml.merges"]]
    elif scores is not None:
        merges = _merges_from_scores(tokens, [float(s) for s in scores])
    else:
        raise ConvertError(f"{header.path}: a SentencePiece tokenizer needs tokenizer.ggml.scores or merges")
    unk = int(meta.get("tokenizer.ggml.unknown_token_id", 0))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk], fuse_unk=True, byte_fallback=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    if bool(meta.get("tokenizer.ggml.add_space_prefix", True)):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    strip = [decoders.Strip(" ", 1, 0)] if bool(meta.get("tokenizer.ggml.add_space_prefix", True)) else []
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip])
    return tok


def _merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """SentencePiece has no merge list: every split of a vocabulary piece into two vocabulary
    pieces is a merge, ranked by the merged piece's score (higher first)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranked = []
    for piece, pid in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                ranked.append((-scores[pid], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _add_special_tokens(tok: Any, header: GGUFHeader, tokens: list[str]) -> None:
    from tokenizers import AddedToken

    types = header.metadata.get("tokenizer.ggml.token_type")
    if types is None:
        return
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(types) if int(t) == _CONTROL and tokens[i]]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if int(t) == _USER_DEFINED and tokens[i]]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)


def _post_processor(tok: Any, header: GGUFHeader, tokens: list[str]) -> None:
    from tokenizers import processors

    meta = header.metadata
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", meta.get("tokenizer.ggml.model") == "llama"))
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if add_bos and bos is not None:
        text = tokens[int(bos)]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{text}:0 $A:0", pair=f"{text}:0 $A:0 {text}:1 $B:1", special_tokens=[(text, int(bos))]
        )


def special_token_ids(header: GGUFHeader) -> dict[str, Any]:
    """bos/eos/pad/unk ids from the metadata, and every end-of-turn id (eos first)."""
    meta, tokens = header.metadata, header.metadata.get("tokenizer.ggml.tokens") or []
    ids = {name: int(meta[f"tokenizer.ggml.{name}_token_id"])
           for name in ("bos", "eos", "pad", "unknown") if f"tokenizer.ggml.{name}_token_id" in meta}
    ends = [ids["eos"]] if "eos" in ids else []
    if "tokenizer.ggml.eot_token_id" in meta:
        ends.append(int(meta["tokenizer.ggml.eot_token_id"]))
    types = meta.get("tokenizer.ggml.token_type")
    for i, text in enumerate(tokens[:4096] if types is not None else []):
        if text in _END_OF_TURN and int(types[i]) == _CONTROL and i not in ends:
            ends.append(i)
    ids["end_of_turn"] = ends
    return ids


def write_tokenizer_files(header: GGUFHeader, folder: Path, tok: Any = None) -> dict[str, Any]:
    """Write tokenizer.json and tokenizer_config.json (chat template included) into ``folder``;
    return the special token ids (see :func:`special_token_ids`). ``tok``: the tokenizer
    :func:`build_tokenizer` already made for this header (built here when None)."""
    tok = tok if tok is not None else build_tokenizer(header)
    tok.save(str(folder / "tokenizer.json"))
    tokens = header.metadata["tokenizer.ggml.tokens"]
    ids = special_token_ids(header)
    names = {"bos": "bos_token", "eos": "eos_token", "pad": "pad_token", "unknown": "unk_token"}
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(header.metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(header.metadata.get("tokenizer.ggml.add_eos_token", False)),
        **{names[k]: tokens[v] for k, v in ids.items() if k in names and 0 <= v < len(tokens)},
    }
    context = header.arch_value("context_length")
    if context:
        cfg["model_max_length"] = int(context)
    if isinstance(header.metadata.get("tokenizer.chat_template"), str):
        cfg["chat_template"] = header.metadata["tokenizer.chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return ids
