"""A BERT-family encoder in MLX (BERT, MiniLM, BGE-small, E5-small: ``model_type == "bert"``).

Absolute position embeddings, token type embeddings, post-LayerNorm blocks, exact (erf) GELU as
Hugging Face's ``"gelu"``, and attention that ignores padded keys.

Parameter names mirror Hugging Face's ``BertModel`` state dict with any leading ``bert.``
stripped, so a Hugging Face ``model.safetensors`` loads without a rename table::

    embeddings.word_embeddings.weight            (vocab_size, H)
    embeddings.position_embeddings.weight        (max_position_embeddings, H)
    embeddings.token_type_embeddings.weight      (type_vocab_size, H)
    embeddings.LayerNorm.{weight,bias}           (H,)
    encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}   (H, H), (H,)
    encoder.layer.{i}.attention.output.dense.{weight,bias}             (H, H), (H,)
    encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}         (H,)
    encoder.layer.{i}.intermediate.dense.{weight,bias}                 (I, H), (I,)
    encoder.layer.{i}.output.dense.{weight,bias}                       (H, I), (H,)
    encoder.layer.{i}.output.LayerNorm.{weight,bias}                   (H,)

Linear weights are ``(out, in)`` as in PyTorch. :func:`sanitize` drops what the encoder does not
use (``pooler.*``, ``embeddings.position_ids``, task heads such as ``cls.*``). Converted folders
(``lacy-mlx convert``) are written in exactly this naming; a ``quantization`` entry in config.json
(``{"group_size": G, "bits": B}``) marks MLX-quantized weights.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from lacy_mlx.encoder.fastmath import attention, gelu
from lacy_mlx.errors import InputError

# Hugging Face hidden_act values -> MLX activations ("gelu" is the exact erf form).
_ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
    "relu": nn.relu,
}
# Prefixes of the parameters the encoder owns (after stripping "bert.").
_OWN_PREFIXES = ("embeddings.", "encoder.")


@dataclass
class BertArgs:
    """The config.json fields the encoder reads; unknown fields are ignored."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"
    model_type: str = "bert"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "BertArgs":
        """Build from a Hugging Face config dict; raises :class:`InputError` for unsupported models."""
        if config.get("model_type", "bert") != "bert":
            raise InputError(
                f"model_type {config.get('model_type')!r} is not a BERT-family encoder; supported: 'bert' "
                "(BERT, MiniLM, BGE, E5, GTE-small style checkpoints)"
            )
        names = {f.name for f in fields(cls)}
        args = cls(**{k: v for k, v in config.items() if k in names})
        if args.position_embedding_type != "absolute":
            raise InputError(
                f"position_embedding_type {args.position_embedding_type!r} is unsupported; only 'absolute'"
            )
        if args.hidden_act not in _ACTIVATIONS:
            raise InputError(f"hidden_act {args.hidden_act!r} is unsupported; supported: {sorted(_ACTIVATIONS)}")
        if args.hidden_size % args.num_attention_heads:
            raise InputError("hidden_size must be a multiple of num_attention_heads")
        return args


class Embeddings(nn.Module):
    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(args.vocab_size, args.hidden_size)
        self.position_embeddings = nn.Embedding(args.max_position_embeddings, args.hidden_size)
        self.token_type_embeddings = nn.Embedding(args.type_vocab_size, args.hidden_size)
        self.LayerNorm = nn.LayerNorm(args.hidden_size, eps=args.layer_norm_eps)

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1])
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))  # (B, L, H)


class SelfAttention(nn.Module):
    """Holds the q/k/v projections under HF's ``attention.self`` names."""

    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.query = nn.Linear(args.hidden_size, args.hidden_size)
        self.key = nn.Linear(args.hidden_size, args.hidden_size)
        self.value = nn.Linear(args.hidden_size, args.hidden_size)


class DenseNorm(nn.Module):
    """``LayerNorm(residual + dense(x))``: HF's ``attention.output`` and ``output`` blocks."""

    def __init__(self, dim_in: int, dim_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim_in, dim_out)
        self.LayerNorm = nn.LayerNorm(dim_out, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(residual + self.dense(x))


class Attention(nn.Module):
    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.scale = (args.hidden_size // args.num_attention_heads) ** -0.5
        setattr(self, "self", SelfAttention(args))  # HF calls the q/k/v holder "self"
        self.output = DenseNorm(args.hidden_size, args.hidden_size, args.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        B, L, H = x.shape
        proj = getattr(self, "self")
        q, k, v = (p(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
                   for p in (proj.query, proj.key, proj.value))  # (B, nh, L, hs)
        ctx = attention(q, k, v, self.scale, mask)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(B, L, H)
        return self.output(ctx, x)


class Intermediate(nn.Module):
    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.dense = nn.Linear(args.hidden_size, args.intermediate_size)
        self.act = _ACTIVATIONS[args.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.attention = Attention(args)
        self.intermediate = Intermediate(args)
        self.output = DenseNorm(args.intermediate_size, args.hidden_size, args.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.layer = [Layer(args) for _ in range(args.num_hidden_layers)]

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertModel(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> last hidden states (B, L, H)``."""

    def __init__(self, args: BertArgs) -> None:
        super().__init__()
        self.args = args
        self.embeddings = Embeddings(args)
        self.encoder = Encoder(args)

    def __call__(
        self,
        input_ids: mx.array,
        attention_mask: mx.array | None = None,
        token_type_ids: mx.array | None = None,
    ) -> mx.array:
        if token_type_ids is None:
            token_type_ids = mx.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # Boolean key mask (B, 1, 1, L): padded keys take no attention; padded queries are pooled away.
        mask = None if attention_mask is None else attention_mask[:, None, None, :].astype(mx.bool_)
        return self.encoder(x, mask)

    @staticmethod
    def sanitize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Keep the encoder's own parameters: strip ``bert.``, drop pooler, position_ids and heads."""
        out = {}
        for key, value in weights.items():
            if key.startswith("bert."):
                key = key[len("bert."):]
            if key.startswith(_OWN_PREFIXES) and not key.endswith("position_ids"):
                out[key] = value
        return out
