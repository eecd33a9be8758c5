"""``<CALL>`` surgery: add lacy-mlx's special tokens to a tokenizer and give them embedding rows.

New ids come from the tokenizer (the next free ids). When the embedding matrix already has
spare rows past the tokenizer's length (common: vocab padded to a multiple of 64/128), those
rows are reused; otherwise embed_tokens (and an untied lm_head) grow. New rows start as the mean
of the real tokens' rows. Old rows are untouched, so old tokens' logits cannot change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx

from lacy_mlx.tokens import CALL_TOKEN, EVIDENCE_END, EVIDENCE_START, SPECIAL_TOKENS, LacySection

from .errors import ConvertError, MissingConfigError
from .families import Family, get_path, set_path


@dataclass
class TokenPlan:
    """Ids chosen for the special tokens and how the embedding rows change."""

    ids: dict[str, int]
    tokenizer_len: int  # real tokens before surgery (rows past it are spare)
    rows_before: int
    rows_after: int
    added: tuple[str, ...]  # tokens the tokenizer did not have yet
    tokenizer_json: str = field(repr=False, default="")

    def lacy_section(self, gate: dict[str, Any] | None = None) -> LacySection:
        """The config.json ``lacy`` section recording these ids."""
        return LacySection(
            call_token_id=self.ids[CALL_TOKEN], evidence_start_id=self.ids[EVIDENCE_START],
            evidence_end_id=self.ids[EVIDENCE_END], gate=dict(gate or {}),
        )


def plan_tokens(src_root: Path, rows: int) -> TokenPlan:
    """Add the tokens to ``src_root/tokenizer.json`` in memory; ``rows`` is the embedding's row count."""
    from tokenizers import AddedToken, Tokenizer

    path = src_root / "tokenizer.json"
    if not path.is_file():
        raise MissingConfigError(
            f"{path}: missing; --add-call-token edits tokenizer.json (save the tokenizer with a "
            "fast tokenizer, e.g. AutoTokenizer(...).save_pretrained, to create it)"
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exceptions on bad JSON
        raise ConvertError(f"{path}: cannot be read by the tokenizers library ({exc})") from exc
    length = max(tok.get_vocab(with_added_tokens=True).values(), default=-1) + 1
    added = tuple(t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    rows_after = max(rows, max(ids.values()) + 1)
    return TokenPlan(ids, min(length, rows), rows, rows_after, added, tok.to_str())


def grow_rows(weights: dict[str, mx.array], family: Family, plan: TokenPlan) -> dict[str, mx.array]:
    """Give the new tokens mean-initialised rows in the embedding and the untied output head."""
    for key in (family.embed_key, family.lm_head_key):
        if key and key in weights:
            weights[key] = _with_rows(weights[key], plan)
    return weights


def _with_rows(matrix: mx.array, plan: TokenPlan) -> mx.array:
    mean = matrix[: plan.tokenizer_len].astype(mx.float32).mean(axis=0).astype(matrix.dtype)
    if plan.rows_after > matrix.shape[0]:
        pad = mx.broadcast_to(mean, (plan.rows_after - matrix.shape[0], matrix.shape[1]))
        matrix = mx.concatenate([matrix, pad], axis=0)  # (rows_after, H)
    fresh = [plan.ids[t] for t in plan.added if plan.ids[t] < plan.rows_before]
    if fresh:  # reused spare rows: overwrite whatever untrained values they held
        idx = mx.array(fresh)
        matrix[idx] = mx.broadcast_to(mean, (len(fresh), matrix.shape[1]))
    return matrix


def update_config(config: dict[str, Any], family: Family, plan: TokenPlan) -> None:
    """Record the new row count wherever the family keeps vocab_size."""
    for dotted in family.vocab_keys:
        if get_path(config, dotted) is not None:
            set_path(config, dotted, plan.rows_after)


def write_tokenizer(src_root: Path, out_dir: Path, plan: TokenPlan) -> None:
    """Write the edited tokenizer.json and register the tokens in tokenizer_config.json."""
    (out_dir / "tokenizer.json").write_text(plan.tokenizer_json, encoding="utf-8")
    cfg_path = src_root / "tokenizer_config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    decoder = cfg.setdefault("added_tokens_decoder", {})
    for token in SPECIAL_TOKENS:
        decoder[str(plan.ids[token])] = {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
    for key in ("additional_special_tokens", "extra_special_tokens"):
        if isinstance(cfg.get(key), list):
            cfg[key] += [t for t in SPECIAL_TOKENS if t not in cfg[key]]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
