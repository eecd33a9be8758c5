"""The special tokens lacy-mlx adds to a vocabulary, and where a model folder records their ids.

A model folder's config.json may hold a ``"lacy"`` section::

    {"lacy": {"call_token_id": 50257, "evidence_start_id": 50258, "evidence_end_id": 50259,
              "gate": {"mode": "call", "call_threshold": 0.5, "entropy_threshold": 3.0}}}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CALL_TOKEN = "<CALL>"
EVIDENCE_START = "<EVIDENCE>"
EVIDENCE_END = "</EVIDENCE>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = (CALL_TOKEN, EVIDENCE_START, EVIDENCE_END)


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
