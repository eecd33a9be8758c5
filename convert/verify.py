"""Parity check: the PyTorch model (transformers) against the converted MLX model on one probe.

Decoders: max absolute difference of the logits over the original vocabulary (new <CALL> columns
are excluded). Encoders: cosine of the pooled, normalised embeddings. Tolerances scale with the
output dtype and quantization, since a float16 or 4-bit model cannot match float32 PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingDependencyError, TORCH_HINT
from .readers import Checkpoint

PROBE_LEN = 12
GREEDY_LEN = 16
# Allowed |logit diff| / max(1, |logit| scale) for decoders, and 1 - cosine for encoders.
_LOGIT_TOL = {"float32": 1e-3, "float16": 2e-2, "bfloat16": 6e-2, 8: 0.15, 4: 0.5}
_COSINE_TOL = {"float32": 1e-4, "float16": 1e-3, "bfloat16": 5e-3, 8: 2e-2, 4: 1e-1}


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of ``--verify``: ``metric`` is "max_abs_logit_diff" or "cosine"."""

    metric: str
    value: float
    tolerance: float
    passed: bool
    probe_tokens: int
    greedy_match: bool | None = None  # GGUF: the greedy continuations agree token for token

    def describe(self) -> str:
        """One line for the CLI."""
        op = "<=" if self.metric != "cosine" else ">="
        verdict = "ok" if self.passed else "FAILED"
        fmt = ".6f" if self.metric == "cosine" else ".3g"
        greedy = "" if self.greedy_match is None else f"; greedy {GREEDY_LEN} tokens {'identical' if self.greedy_match else 'DIFFER'}"
        return f"verify: {self.metric} = {self.value:{fmt}} ({verdict}; needs {op} {self.tolerance:{fmt}}){greedy}"


def require_reference() -> None:
    """Fail early, before converting, when torch or transformers are missing."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"--verify runs the PyTorch model and needs torch and transformers; {TORCH_HINT} "
            "and pip install transformers"
        ) from exc


def verify(ckpt: Checkpoint, kind: str, out: Path, *, dtype: str, bits: int | None,
           old_vocab: int, tolerance: float | None = None) -> VerifyReport:
    """Compare the source checkpoint with the converted folder ``out``."""
    ids = _probe(old_vocab)
    key = bits if bits else dtype
    if kind == "encoder":
        ref, got = _torch_encoder(ckpt, ids, out), _mlx_encoder(out, ids)
        cos = float(np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
        tol = tolerance if tolerance is not None else 1.0 - _COSINE_TOL[key]
        return VerifyReport("cosine", cos, tol, cos >= tol, len(ids))
    ref = _torch_logits(ckpt, ids)[:, :old_vocab]
    got = _mlx_logits(out, ids)[:, :old_vocab]
    diff = float(np.abs(ref - got).max())
    tol = tolerance if tolerance is not None else _LOGIT_TOL[key] * max(1.0, float(np.abs(ref).max()))
    return VerifyReport("max_abs_logit_diff", diff, tol, diff <= tol, len(ids))


def _probe(vocab: int) -> list[int]:
    rng = np.random.default_rng(0)
    return [int(i) for i in rng.integers(0, vocab, size=PROBE_LEN)]


def _torch_model(ckpt: Checkpoint, auto_name: str) -> Any:
    import torch
    import transformers

    auto = getattr(transformers, auto_name)
    if ckpt.layout != "state_dict":
        model = auto.from_pretrained(str(ckpt.root), dtype=torch.float32)
    else:  # a bare state dict: build from config.json, then load the tensors
        config = transformers.AutoConfig.from_pretrained(str(ckpt.root))
        model = auto.from_config(config, dtype=torch.float32)
        state = torch.load(str(ckpt.weight_files[0]), weights_only=True, map_location="cpu")
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        state = {k.removeprefix("module."): v.float() for k, v in state.items()}
        model.load_state_dict(state, strict=False)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    return model.eval()


def _torch_logits(ckpt: Checkpoint, ids: list[int]) -> np.ndarray:
    import torch

    model = _torch_model(ckpt, "AutoModelForCausalLM")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()  # (L, V)


def _mlx_logits(out: Path, ids: list[int]) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(out))
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))  # (L, V)


def _pooling(folder: Path) -> str:
    from lacy_mlx.encoder.loader import read_pooling

    return read_pooling(folder)


def _torch_encoder(ckpt: Checkpoint, ids: list[int], out: Path) -> np.ndarray:
    import torch

    model = _torch_model(ckpt, "AutoModel")
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0].float().numpy()  # (L, H)
    vec = hidden[0] if _pooling(out) == "cls" else hidden.mean(axis=0)
    return vec / np.linalg.norm(vec)


def _mlx_encoder(out: Path, ids: list[int]) -> np.ndarray:
    import mlx.core as mx

    from lacy_mlx.encoder.embedder import pool
    from lacy_mlx.encoder.loader import load_encoder

    loaded = load_encoder(Path(out))
    x = mx.array([ids])
    return np.array(pool(loaded.model(x, mx.ones_like(x)), mx.ones_like(x), loaded.pooling))[0]


def verify_gguf(src: Path, out: Path, *, dtype: str, tolerance: float | None = None) -> VerifyReport:
    """Compare the converted folder ``out`` with transformers' dequantizing GGUF loader on ``src``:
    max |logit diff| on a probe, and greedy continuations of it (passing needs both)."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader)
    except ImportError as exc:
        raise MissingDependencyError("--verify of a GGUF file needs the gguf package: pip install 'lacy-mlx[convert]'") from exc
    import torch
    import transformers

    ref_model = transformers.AutoModelForCausalLM.from_pretrained(
        str(src.parent), gguf_file=src.name, dtype=torch.float32).eval()
    vocab = int(ref_model.config.vocab_size)
    ids = _probe(vocab)
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids])).logits[0].float().numpy()
        ref_greedy = _torch_greedy(ref_model, ids)
    got = _mlx_logits(out, ids)
    diff = float(np.abs(ref - got[:, :vocab]).max())
    tol = tolerance if tolerance is not None else _LOGIT_TOL[dtype] * max(1.0, float(np.abs(ref).max()))
    same = ref_greedy == _mlx_greedy(out, ids)
    return VerifyReport("max_abs_logit_diff", diff, tol, diff <= tol and same, len(ids), same)


def _torch_greedy(model: Any, ids: list[int]) -> list[int]:
    import torch

    seq = list(ids)
    for _ in range(GREEDY_LEN):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids):]


def _mlx_greedy(out: Path, ids: list[int]) -> list[int]:
    import mlx.core as mx
    from mlx_lm import load

    model, _ = load(str(out))
    seq = list(ids)
    for _ in range(GREEDY_LEN):
        seq.append(int(mx.argmax(model(mx.array([seq]))[0, -1])))
    return seq[len(ids):]
