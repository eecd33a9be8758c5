"""Read a GGUF file's header: metadata and the name, type and shape of every tensor.

MLX's own reader (``mx.load(path, return_metadata=True)``) returns the tensors but not their
GGML types, and fails with an opaque message on types it cannot read; this parser runs first,
so conversion can refuse such a file, naming the types, before anything is loaded or written.
Layout (GGUF v2/v3): magic, version, tensor count, metadata count, metadata key/values,
tensor infos, padding to ``general.alignment``, tensor data.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptFileError

MAGIC = b"GGUF"
# GGML tensor type ids (ggml.h) -> names, for messages; MLX reads the first six.
GGML_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4",
}
# Block-quantized types MLX turns into affine (weight, scales, biases) triples: bits per weight.
AFFINE_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
FLOAT_TYPES = ("F32", "F16", "BF16")
SUPPORTED = FLOAT_TYPES + tuple(AFFINE_BITS)
GROUP_SIZE = 32  # every GGUF block type above quantizes 32 weights per block

# Metadata value type ids -> struct format (scalars) ; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry. ``shape`` is row-major (numpy order: GGML's dims reversed)."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # absolute byte offset in the file

    @property
    def supported(self) -> bool:
        return self.type_name in SUPPORTED


@dataclass(frozen=True)
class GGUFHeader:
    """A parsed header: ``metadata`` values are Python scalars, strings, lists or numpy arrays."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """``<architecture>.<key>`` from the metadata (e.g. ``block_count``), or ``default``."""
        value = self.metadata.get(f"{self.architecture}.{key}", default)
        return value.item() if isinstance(value, np.generic) else value


class _Cursor:
    """Sequential little-endian reads over a byte buffer, raising CorruptFileError past its end."""

    def __init__(self, data: memoryview, path: Path, complete: bool) -> None:
        self.data, self.pos, self.path, self.complete = data, 0, path, complete

    def need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            if not self.complete:
                raise _NeedMore
            raise CorruptFileError(f"{self.path}: the GGUF header is truncated (the file ends at byte {len(self.data)})")

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(size)
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.take("Q")
        self.need(n)
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            return self.array()
        raise CorruptFileError(f"{self.path}: unknown GGUF metadata value type {vtype}")

    def array(self) -> Any:
        etype, count = self.take("I"), self.take("Q")
        if etype in _NUMPY:  # numeric arrays in one copy (token types, scores)
            dtype = np.dtype(_NUMPY[etype]).newbyteorder("<")
            end = self.pos + count * dtype.itemsize
            self.need(count * dtype.itemsize)
            out = np.frombuffer(self.data[self.pos:end], dtype=dtype).copy()
            self.pos = end
            return out
        return [self.value(etype) for _ in range(count)]


class _NeedMore(Exception):
    """The bytes read so far end inside the header."""


def read_header(path: str | Path) -> GGUFHeader:
    """Parse the header of the GGUF file at ``path``; CorruptFileError if it is not one."""
    path = Path(path)
    size = path.stat().st_size
    chunk = 8 << 20  # headers are a few MB (the vocabulary); read more only when needed
    with open(path, "rb") as fh:
        while True:
            fh.seek(0)
            data = fh.read(chunk)
            try:
                return _parse(memoryview(data), path, complete=len(data) >= size)
            except _NeedMore:
                chunk *= 4


def _parse(data: memoryview, path: Path, complete: bool) -> GGUFHeader:
    if bytes(data[:4]) != MAGIC:
        raise CorruptFileError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    cur = _Cursor(data, path, complete)
    cur.pos = 4
    version = cur.take("I")
    if version not in (2, 3):
        raise CorruptFileError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    metadata = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.take("I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("Q") for _ in range(cur.take("I"))]
        ttype, offset = cur.take("I"), cur.take("Q")
        infos.append((name, tuple(reversed(dims)), GGML_TYPES.get(ttype, f"type {ttype}"), offset))
    align = int(metadata.get("general.alignment", 32))
    start = (cur.pos + align - 1) // align * align
    tensors = {n: TensorInfo(n, s, t, start + o) for n, s, t, o in infos}
    end = max((start + o for *_, o in infos), default=start)
    if complete and end > len(data):
        raise CorruptFileError(f"{path}: truncated: its tensors reach past the end of the file")
    return GGUFHeader(path, version, metadata, tensors)
