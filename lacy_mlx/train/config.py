"""Training configuration: one flat dataclass, loadable from JSON or YAML, with named presets.

Every key of :class:`TrainConfig` may appear in the file; unknown keys are an error (a typo must not
silently train something else). ``preset`` in the file starts from that preset.
"""
from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from lacy_mlx.errors import InputError


@dataclass(frozen=True)
class TrainConfig:
    # corpus
    people: int = 300                 # training people (Zipf-ranked)
    heldout_people: int = 50          # people never seen in training (another seed)
    max_mentions: int = 40            # mentions of the most frequent person
    zipf_s: float = 1.0               # mentions of rank r: ceil(max_mentions / r**zipf_s)
    copy_fraction: float = 0.3        # share of biographies carrying evidence blocks
    evidence_k: int = 3               # passages per evidence block (1 right + distractors)
    evidence_k_min: int = 3           # blocks hold evidence_k_min..evidence_k passages (1: a copy curriculum)
    copy_facts: int = 2               # evidence blocks per copying biography: 1..copy_facts
    retrieval_k: int = 1              # passages per call the exported model asks for (config.json lacy.retrieval)
    evidence_lm: bool = False         # train next-token prediction on passage text inside evidence blocks
    corpus_seed: int = 1
    heldout_seed: int = 2
    tagger: str = "auto"              # "auto" | "rules" | "spacy[:pipeline]"
    vocab_size: int = 2048
    # model (mlx_lm.models.llama)
    hidden_size: int = 256
    num_layers: int = 4
    intermediate_size: int = 768
    num_heads: int = 4
    num_kv_heads: int = 4
    init_from: str = ""               # fine-tune an existing mlx-lm folder instead (see finetune.py)
    lora_rank: int = 0                # > 0: LoRA through mlx_lm.tuner when init_from is set
    lora_layers: int = 8
    # objective
    objective: str = "lacy"           # "lacy" | "loss" | "rho1" | "plain"
    q: float = 0.6                    # lacy: share of the batch's factual spans that become calls
    budget: float = 0.15              # loss / rho1: share of all targets that become calls
    span_reduce: str = "mean"         # lacy span score: "mean" | "max" over the span's tokens
    call_at: str = "first"            # "first": a chosen span calls at its first token; "span": at every token
    renormalize: str = "all"          # targets scored without <CALL>: "all" ordinary ones (the paper) or only
                                      # "facts" (elsewhere the full softmax teaches: no call here)
    copy_weight: float = 1.0          # loss weight of values copied from evidence
    reference_model: str = ""         # rho1: folder of the reference model
    tower_weight: float = 0.1         # lambda of the latent-consistency (InfoNCE) loss; 0 = no tower
    tower_temperature: float = 0.05
    tower_slots: int = 64             # query-tower positions per batch
    embedder: str = "default"         # "default" (MiniLM when installed, else hashed) or a registry name
    # optimisation
    steps: int = 2000
    batch_size: int = 16
    seq_len: int = 128
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    # output
    log_every: int = 10
    save_every: int = 500
    dtype: str = "float16"            # dtype of the exported weights
    progress: bool = True

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Tests: trains in well under a minute on one CPU core.
    "tiny": dict(people=40, heldout_people=30, tower_weight=0.5, max_mentions=12, vocab_size=512, hidden_size=64,
                 num_layers=2, intermediate_size=128, num_heads=2, num_kv_heads=2, steps=40,
                 batch_size=8, seq_len=64, lr=1e-2, warmup_steps=5, log_every=5, save_every=20,
                 tower_slots=64, tower_temperature=0.1, tagger="rules", embedder="hashed-ngram-v1:128",
                 dtype="float32"),
    # The embedded demo model (lacy_mlx/data/demo-model): a few M parameters, float16.
    "demo": dict(people=3000, heldout_people=200, max_mentions=150, zipf_s=0.9, vocab_size=2048,
                 hidden_size=128, num_layers=4, intermediate_size=384, num_heads=4, num_kv_heads=4,
                 steps=4000, batch_size=8, seq_len=256, lr=3e-3, warmup_steps=100, save_every=250,
                 tower_weight=0.3, tagger="rules", copy_fraction=0.6, copy_facts=3, evidence_k_min=1,
                 copy_weight=2.0, renormalize="facts"),
}
# Stage 2 of the embedded demo model: fine-tune the `demo` run (init_from) on copy-heavy data at a
# lower learning rate; it keeps training the query tower. Copy accuracy on one right passage, for
# people seen once: 0.67 after `demo`, 0.86 after this.
PRESETS["demo-copy"] = dict(PRESETS["demo"], steps=1200, lr=1e-3, warmup_steps=50, copy_fraction=0.9,
                            copy_facts=5, copy_weight=3.0)
# The objective ablation (lacy_mlx.train.ablation): the demo's model size on fewer people and steps,
# so that four runs fit in about an hour on 2 idle CPU cores (0.73-0.98 s/step measured; 4.7-5.1 s/step with
# the machine shared, docs/eval.md).
PRESETS["ablation"] = dict(PRESETS["demo"], people=1000, heldout_people=100, max_mentions=60, steps=600,
                           save_every=300, warmup_steps=50)


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset with ``overrides`` applied."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return make_config({**PRESETS[name], **overrides})


def make_config(values: dict[str, Any]) -> TrainConfig:
    """A config from a mapping (``preset`` key first applies that preset); unknown keys are rejected."""
    values = dict(values)
    base = dict(PRESETS[values.pop("preset")]) if "preset" in values else {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown training config keys {unknown}; known keys: {', '.join(sorted(known))}")
    cfg = replace(TrainConfig(), **{**base, **values})
    _check(cfg)
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise InputError(f"{p} must hold a mapping of config keys")
    return make_config(data)


# Inclusive bounds of the numeric keys (None: unbounded); "open" low bounds exclude the value.
_AT_LEAST_1 = ("people", "max_mentions", "evidence_k", "evidence_k_min", "copy_facts", "retrieval_k",
               "hidden_size", "num_layers", "intermediate_size", "num_heads", "num_kv_heads", "lora_layers",
               "tower_slots", "steps", "batch_size", "grad_accum", "log_every", "save_every")
_AT_LEAST_0 = ("heldout_people", "corpus_seed", "heldout_seed", "lora_rank", "warmup_steps", "seed", "zipf_s",
               "tower_weight", "weight_decay", "grad_clip")
_RANGES: dict[str, tuple[float | None, float | None]] = {
    **{k: (1, None) for k in _AT_LEAST_1}, **{k: (0, None) for k in _AT_LEAST_0},
    "copy_fraction": (0, 1), "min_lr_ratio": (0, 1), "vocab_size": (64, None), "seq_len": (8, None),
}
_POSITIVE = ("lr", "copy_weight", "tower_temperature")  # > 0
DTYPES = ("float16", "bfloat16", "float32")


def _check_types(cfg: TrainConfig) -> None:
    """Every key has its field's type (an int where a float goes is fine) and lies in its range."""
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        value, kind = getattr(cfg, f.name), hints[f.name]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            name = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}[kind]
            raise InputError(f"training config key {f.name} must be {name}, got {value!r}")
        low, high = _RANGES.get(f.name, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise InputError(f"training config key {f.name} must be {bound}, got {value!r}")
        if f.name in _POSITIVE and value <= 0:
            raise InputError(f"training config key {f.name} must be greater than 0, got {value!r}")
    if cfg.dtype not in DTYPES:
        raise InputError(f"training config key dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")


def _check(cfg: TrainConfig) -> None:
    from lacy_mlx.train.objectives import OBJECTIVES

    _check_types(cfg)
    if cfg.objective not in OBJECTIVES:
        raise InputError(f"objective {cfg.objective!r} is not one of {', '.join(OBJECTIVES)}")
    if cfg.objective == "rho1" and not cfg.reference_model:
        raise InputError("objective 'rho1' needs reference_model: the folder of a model trained with 'plain'")
    if not 0 < cfg.q <= 1 or not 0 < cfg.budget <= 1:
        raise InputError("q and budget must lie in (0, 1]")
    if cfg.span_reduce not in ("mean", "max") or cfg.call_at not in ("span", "first"):
        raise InputError("span_reduce must be 'mean' or 'max'; call_at must be 'span' or 'first'")
    if cfg.renormalize not in ("all", "facts"):
        raise InputError("renormalize must be 'all' (the paper) or 'facts'")
    if not 1 <= cfg.evidence_k_min <= cfg.evidence_k or cfg.copy_facts < 1 or cfg.copy_weight <= 0:
        raise InputError("need 1 <= evidence_k_min <= evidence_k, copy_facts >= 1 and copy_weight > 0")
    if cfg.retrieval_k < 1:
        raise InputError("retrieval_k must be at least 1 (passages per call)")
    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise InputError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
