"""On-device LaCy training: synthetic knowledge corpus, fact labels, objectives, trainer.

Files by concept: ``pools``/``corpus`` (the seeded knowledge base), ``bpe`` (tokenizer),
``labels`` (the grammatical fact signal), ``copying`` (evidence blocks), ``data`` (token streams
and batches), ``objectives`` (LaCy and the baselines), ``latent`` (query-tower recall),
``model``/``trainer``/``checkpoint``/``distributed`` (the MLX loop), ``config`` (presets),
``export`` (the output folder), ``finetune`` (teach an existing model <CALL>), ``evaluate``
(FactScore-style exact fact checking through the runtime), ``metrics`` (their definitions),
``copy_eval`` (the oracle-evidence probe), ``ablation`` (the four objectives compared). Names below load lazily (the trainer imports MLX).
"""
from __future__ import annotations

from lacy_mlx.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "lacy_mlx.train.config",
    "preset": "lacy_mlx.train.config",
    "load_config": "lacy_mlx.train.config",
    "make_config": "lacy_mlx.train.config",
    "train": "lacy_mlx.train.trainer",
    "TrainResult": "lacy_mlx.train.trainer",
    "finetune": "lacy_mlx.train.finetune",
    "evaluate": "lacy_mlx.train.evaluate",
    "EvalReport": "lacy_mlx.train.evaluate",
    "select_calls": "lacy_mlx.train.objectives",
    "make_people": "lacy_mlx.train.corpus",
    "evidence_records": "lacy_mlx.train.corpus",
    "parse_claims": "lacy_mlx.train.corpus",
    "format_evidence": "lacy_mlx.tokens",
    "make_tagger": "lacy_mlx.train.labels",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
