"""A reader of CTranslate2's ``model.bin``: the variables of a converted model as torch tensors.

The ``ctranslate2`` package loads such a file into its own engine but gives no way back to the
arrays, so :mod:`samu_st.models.whisper_convert` reads the file itself. The layout (binary
version 6, written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``), little-endian::

    u32 binary_version, str spec_name, u32 spec_revision, u32 num_variables,
    num_variables × (str name, u8 rank, rank × u32 dim, u8 dtype_id, u32 num_bytes, bytes),
    u32 num_aliases, num_aliases × (str alias, str variable_name)

where ``str`` is ``u16 length`` (counting a final NUL) + UTF-8 bytes + NUL, and ``dtype_id``
indexes ``float32, int8, int16, int32, float16, bfloat16``. Scalars (rank 0) carry the
spec's settings (activation, heads, pre-norm ...). Quantised weights come with a
``<name>_scale`` variable: int8 per output row (``weight = int8 / scale[:, None]``) or int16
one scalar; :func:`dequantized` undoes both.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from samu_st.errors import ModelLoadError

BINARY_VERSION = 6  # CURRENT_BINARY_VERSION of ctranslate2 3.x and 4.x
DTYPES: tuple[torch.dtype, ...] = (
    torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16,
)  # fmt: skip


@dataclass(frozen=True)
class Ct2Model:
    """The content of one ``model.bin``."""

    spec: str  # e.g. "WhisperSpec"
    revision: int  # the spec's revision (WhisperSpec: 3)
    variables: dict[str, torch.Tensor]  # scope/name -> tensor, in the file's dtype
    aliases: dict[str, str]  # alias -> the variable it shares (a tied weight)

    def get(self, name: str) -> torch.Tensor:
        """The variable ``name`` (an alias resolved); :class:`ModelLoadError` if absent."""
        key = self.aliases.get(name, name)
        if key not in self.variables:
            raise ModelLoadError(f"CTranslate2 model ({self.spec}): no variable {name!r}")
        return self.variables[key]

    def scalar(self, name: str) -> int:
        return int(self.get(name).item())


class _Chained:
    """Files read one after the other as one stream (a model.bin split into parts)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._handle: BinaryIO | None = None

    def _some(self, size: int) -> bytes:
        """Up to ``size`` bytes; fewer only at the end of the last file."""
        out = bytearray()
        while len(out) < size:
            if self._handle is None:
                if not self._paths:
                    break
                self._handle = self._paths.pop(0).open("rb")
            chunk = self._handle.read(size - len(out))
            if not chunk:
                self._handle.close()
                self._handle = None
            out += chunk
        return bytes(out)

    def read(self, size: int) -> bytes:
        out = self._some(size)
        if len(out) < size:
            raise ModelLoadError("CTranslate2 model.bin: file ends early (a missing part?)")
        return out

    def at_end(self) -> bool:
        return not self._some(1)


def _unpack(stream: _Chained, fmt: str) -> int:
    return int(struct.unpack("<" + fmt, stream.read(struct.calcsize(fmt)))[0])


def _string(stream: _Chained) -> str:
    size = _unpack(stream, "H")
    return stream.read(size)[:-1].decode("utf-8")


def read_ct2_model(parts: Path | Sequence[Path]) -> Ct2Model:
    """Read a CTranslate2 ``model.bin`` (or its parts, concatenated in order)."""
    paths = [parts] if isinstance(parts, Path) else list(parts)
    stream = _Chained(paths)
    version = _unpack(stream, "I")
    if version != BINARY_VERSION:
        raise ModelLoadError(
            f"{paths[0]}: CTranslate2 binary version {version}; this reader knows version "
            f"{BINARY_VERSION} (re-convert the model with ctranslate2 >= 3)"
        )
    spec = _string(stream)
    revision = _unpack(stream, "I")
    variables: dict[str, torch.Tensor] = {}
    for _ in range(_unpack(stream, "I")):
        name = _string(stream)
        shape = [_unpack(stream, "I") for _ in range(_unpack(stream, "B"))]
        dtype_id = _unpack(stream, "B")
        if dtype_id >= len(DTYPES):
            raise ModelLoadError(f"{paths[0]}: {name}: unknown dtype id {dtype_id}")
        data = bytearray(stream.read(_unpack(stream, "I")))
        variables[name] = torch.frombuffer(data, dtype=DTYPES[dtype_id]).reshape(shape)
    aliases = {_string(stream): _string(stream) for _ in range(_unpack(stream, "I"))}
    if not stream.at_end():
        raise ModelLoadError(f"{paths[0]}: bytes after the last alias (not a model.bin?)")
    return Ct2Model(spec, revision, variables, aliases)


def dequantized(model: Ct2Model, name: str) -> torch.Tensor:
    """Variable ``name`` as float32, int8/int16 weights divided by their ``_scale``."""
    value = model.get(name)
    if value.is_floating_point():
        return value.float()
    scale = model.get(f"{name}_scale").float()
    if value.dtype == torch.int8:  # one scale per output row
        return value.float() / scale.reshape(-1, *([1] * (value.dim() - 1)))
    return value.float() / scale  # int16: one scale for the tensor
