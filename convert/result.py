"""What a conversion wrote: the record ``convert()`` returns for every kind of source."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lacy_mlx.tokens import LacySection

from .verify import VerifyReport


@dataclass(frozen=True)
class ConvertResult:
    """What ``convert`` wrote. ``dtype`` is the output's float dtype (before any quantization)."""

    out: Path
    model_type: str
    kind: str  # "decoder" | "encoder"
    source_layout: str  # "safetensors" | "pytorch" | "state_dict" | "gguf"
    dtype: str
    quantization: dict[str, Any] | None
    num_parameters: int
    files: tuple[str, ...]
    lacy: LacySection
    verify: VerifyReport | None
    seconds: float
