"""The contract training and the runtime share: the special tokens, their ids, the evidence format.

Training writes ``<CALL><EVIDENCE>passages</EVIDENCE>`` blocks into its documents and the runtime's
inline injection appends the same block to the KV cache at a call; both build it here
(:func:`format_evidence`, :meth:`SpecialIds.evidence_block`), so what a model learned to read is
what it is given (tests/test_evidence_contract.py checks the two token for token).

A model folder's config.json may hold a ``"lacy"`` section::

    {"lacy": {"call_token_id": 50257, "evidence_start_id": 50258, "evidence_end_id": 50259,
              "gate": {"mode": "call", "call_threshold": 0.5, "entropy_threshold": 3.0}}}
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CALL_TOKEN = "<CALL>"
EVIDENCE_START = "<EVIDENCE>"
EVIDENCE_END = "</EVIDENCE>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = (CALL_TOKEN, EVIDENCE_START, EVIDENCE_END)

# How passages are joined inside one evidence block.
EVIDENCE_SEPARATOR = "\n"


def format_evidence(passages: Sequence[str]) -> str:
    """The text between ``<EVIDENCE>`` and ``</EVIDENCE>`` for ``passages`` (best first)."""
    return EVIDENCE_SEPARATOR.join(p.strip() for p in passages)


@dataclass(frozen=True)
class LacySection:
    """The ``lacy`` section of a model's config.json; ids are None when the model lacks the token."""

    call_token_id: int | None = None
    evidence_start_id: int | None = None
    evidence_end_id: int | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    retrieval: dict[str, Any] = field(default_factory=dict)  # e.g. {"k": 1}: passages per call

    def to_json(self) -> dict[str, Any]:
        """The section as written into config.json (None ids and empty defaults are left out)."""
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items()
                               if k not in ("gate", "retrieval") and v is not None}
        for key in ("gate", "retrieval"):
            if getattr(self, key):
                out[key] = dict(getattr(self, key))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LacySection":
        """The section from config.json's ``lacy`` mapping (unknown keys, e.g. ``query_tower``, ignored)."""
        return cls(data.get("call_token_id"), data.get("evidence_start_id"), data.get("evidence_end_id"),
                   dict(data.get("gate") or {}), dict(data.get("retrieval") or {}))


def read_lacy_section(model_dir: str | Path) -> LacySection:
    """Read the ``lacy`` section of ``model_dir/config.json``; an empty section when absent."""
    cfg_path = Path(model_dir) / "config.json"
    if not cfg_path.is_file():
        return LacySection()
    return LacySection.from_json(json.loads(cfg_path.read_text(encoding="utf-8")).get("lacy") or {})


def write_lacy_section(model_dir: str | Path, section: LacySection) -> None:
    """Merge ``section`` into ``model_dir/config.json`` (other keys are kept)."""
    cfg_path = Path(model_dir) / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    own = {f.name for f in fields(LacySection)}
    kept = {k: v for k, v in (cfg.get("lacy") or {}).items() if k not in own}  # e.g. the query tower's entry
    cfg["lacy"] = {**kept, **section.to_json()}
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class SpecialIds:
    """A model's lacy token ids (None where the model lacks the token)."""

    call: int | None = None
    evidence_start: int | None = None
    evidence_end: int | None = None

    @property
    def inline_capable(self) -> bool:
        """Whether the model has all three tokens (inline injection and training need them)."""
        return None not in (self.call, self.evidence_start, self.evidence_end)

    @property
    def all(self) -> tuple[int, ...]:
        return tuple(i for i in (self.call, self.evidence_start, self.evidence_end) if i is not None)

    def evidence_block(self, body: Sequence[int]) -> list[int]:
        """``<EVIDENCE> body </EVIDENCE>`` as ids (``body``: the ids of :func:`format_evidence`'s text)."""
        return [self.evidence_start, *body, self.evidence_end]  # type: ignore[list-item]

    def section(self, **settings: Any) -> LacySection:
        """The config.json ``lacy`` section recording these ids (``settings``: ``gate``, ``retrieval``)."""
        return LacySection(self.call, self.evidence_start, self.evidence_end, **settings)


def special_ids(tokenizer: Any, section: LacySection | None = None) -> SpecialIds:
    """The ids of ``section`` (a model's config.json ``lacy`` section) where it names them, else the
    tokenizer's vocabulary (``get_vocab()``: an mlx-lm/transformers or a ``tokenizers`` tokenizer)."""
    try:
        vocab: dict[str, int] = dict(tokenizer.get_vocab())
    except (AttributeError, TypeError):
        vocab = {}
    named = section or LacySection()

    def pick(from_section: int | None, token: str) -> int | None:
        return from_section if from_section is not None else vocab.get(token)

    return SpecialIds(
        call=pick(named.call_token_id, CALL_TOKEN),
        evidence_start=pick(named.evidence_start_id, EVIDENCE_START),
        evidence_end=pick(named.evidence_end_id, EVIDENCE_END),
    )
