"""Write a trained model as a folder both ``mlx_lm.load`` and lacy-mlx load.

Contents: ``model.safetensors`` (the language model in ``cfg.dtype``), ``config.json`` (the llama
architecture, ``eos_token_id``, and the ``lacy`` section with the special-token ids and the query
tower entry), ``tokenizer.json`` + ``tokenizer_config.json`` (already written by prepare),
``query_tower.safetensors`` when trained, ``training_config.json`` and ``data/``.
"""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from lacy_mlx.tokens import END_OF_TEXT, special_ids, write_lacy_section
from lacy_mlx.train.config import TrainConfig
from lacy_mlx.train.model import TrainModel, llama_args

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


def export_model(cfg: TrainConfig, out_dir: str | Path, model: TrainModel, prep) -> Path:
    """Export ``model`` into ``out_dir`` (the run folder); returns the folder."""
    out = Path(out_dir)
    tok = prep.tokenizer
    dtype = DTYPES[cfg.dtype]
    weights = {k: v.astype(dtype) for k, v in tree_flatten(model.lm.parameters())}
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    args = llama_args(cfg, tok.get_vocab_size())
    config = {k: v for k, v in args.__dict__.items() if v is not None and k != "layer_types"}
    eot = tok.token_to_id(END_OF_TEXT)
    config.update({"eos_token_id": eot, "bos_token_id": eot, "torch_dtype": cfg.dtype})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_lacy_section(out, special_ids(tok).section(gate={"mode": "call", "call_threshold": 0.5},
                                                     retrieval={"k": cfg.retrieval_k}))
    if model.has_tower:
        model.tower.save(out, embedder=prep.embedder_name)
    (out / "training_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    return out
