"""Teach an existing mlx-lm model ``<CALL>``: full fine-tuning, or LoRA through ``mlx_lm.tuner``.

The base folder (``cfg.init_from``) must already have ``<CALL>``, ``<EVIDENCE>`` and ``</EVIDENCE>``
in its tokenizer (lacy-mlx's token surgery adds them; models trained by :func:`train` have them).
The run trains on the same synthetic corpus and objectives as :func:`lacy_mlx.train.trainer.train`,
then writes a folder with the base model's config plus the ``lacy`` section, its tokenizer, the
(LoRA-fused) weights in the base dtype and the query tower.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from lacy_mlx.errors import InputError
from lacy_mlx.query_tower import QueryTower
from lacy_mlx.tokens import CALL_TOKEN, special_ids, write_lacy_section
from lacy_mlx.train import distributed
from lacy_mlx.train.config import TrainConfig
from lacy_mlx.train.model import TrainModel
from lacy_mlx.train.trainer import TrainResult, run_loop, setup_run

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def apply_lora(lm: nn.Module, *, rank: int, layers: int, scale: float = 20.0) -> None:
    """Freeze ``lm`` and put LoRA adapters on the linear layers of its last ``layers`` blocks."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    lm.freeze()
    linear_to_lora_layers(lm, min(layers, len(lm.layers)), {"rank": rank, "scale": scale, "dropout": 0.0})


def fuse_lora(lm: nn.Module) -> None:
    """Replace every LoRA layer by its fused linear layer (as ``mlx_lm fuse`` does)."""
    fused = [(name, m.fuse()) for name, m in lm.named_modules() if hasattr(m, "fuse")]
    if fused:
        lm.update_modules(tree_unflatten(fused))


def finetune(cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
             stop_at: int | None = None) -> TrainResult:
    """Fine-tune ``cfg.init_from`` into ``out_dir`` (full when ``cfg.lora_rank == 0``, else LoRA)."""
    from mlx_lm import load

    from lacy_mlx.train.prepare import prepare

    base, out = Path(cfg.init_from), Path(out_dir)
    if not (base / "tokenizer.json").is_file():
        raise InputError(f"{base} has no tokenizer.json: fine-tuning needs an mlx-lm folder with a fast tokenizer")
    world = distributed.init()
    rank, size = (world.rank(), world.size()) if world is not None else (0, 1)
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (base / name).is_file() and rank == 0:
            shutil.copy(base / name, out / name)
    lm, hf_tok = load(str(base))
    prep = prepare(cfg, out, write=rank == 0, eot_id=hf_tok.eos_token_id, tokenizer_dir=base)
    call_id = prep.tokenizer.token_to_id(CALL_TOKEN)
    mx.random.seed(cfg.seed)
    tower = None
    if prep.embeddings is not None:
        dim = int(prep.embeddings.shape[1])
        tower = QueryTower.load(base)  # a lacy-mlx base keeps training its tower
        if tower is None or (tower.hidden_size, tower.embed_dim) != (lm.args.hidden_size, dim):
            tower = QueryTower(lm.args.hidden_size, dim)
    base_dtype = _float_dtype(lm)
    if cfg.lora_rank > 0:
        apply_lora(lm, rank=cfg.lora_rank, layers=cfg.lora_layers)
    else:  # full fine-tuning keeps float32 master weights; the export casts back to the base dtype
        lm.update(tree_map(lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p,
                           lm.parameters()))
    model = TrainModel(lm, tower)
    table = mx.array(prep.embeddings) if prep.embeddings is not None else mx.zeros((1, 1))
    optimizer, stepper, batches, step = setup_run(cfg, out, model, prep, call_id, world, resume=resume)
    return run_loop(cfg, out, model, optimizer, stepper, batches, step, stop_at, None, table, rank,
                    lambda: _export(cfg, base, out, model, prep, base_dtype), None)


def _float_dtype(lm: nn.Module) -> mx.Dtype:
    return next(v.dtype for _, v in tree_flatten(lm.parameters()) if mx.issubdtype(v.dtype, mx.floating))


def _export(cfg: TrainConfig, base: Path, out: Path, model: TrainModel, prep, dtype: mx.Dtype) -> None:
    lm = model.lm
    fuse_lora(lm)
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    weights = {k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in tree_flatten(lm.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    config.pop("lacy", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tok = prep.tokenizer
    write_lacy_section(out, special_ids(tok).section(gate={"mode": "call", "call_threshold": 0.5},
                                                     retrieval={"k": cfg.retrieval_k}))
    if model.has_tower:
        model.tower.save(out, embedder=prep.embedder_name)
    (out / "training_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
