"""Collate decoded utterances into a zero-padded batch that carries its lengths and mask.

Only audio and texts: step-specific collators (CTC labels, decoder targets, teacher embeddings)
wrap :func:`collate_audio` and add their own tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class AudioBatch:
    """A padded batch of waveforms; rows past ``lengths[b]`` are zeros."""

    input_values: torch.Tensor  # (B, S) float32, zero-padded
    lengths: torch.Tensor  # (B,) int64, real samples per row
    attention_mask: torch.Tensor  # (B, S) int64, 1 on real samples (what HF wav2vec2 takes)
    ids: list[str]
    languages: list[str]
    source_texts: list[str]
    target_texts: list[str]
    indices: list[int]  # dataset positions

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def padding_fraction(self) -> float:
        """Share of padded samples in ``input_values``."""
        total = self.input_values.numel()
        return 0.0 if total == 0 else 1.0 - float(self.lengths.sum()) / total

    def to(self, device: torch.device | str, non_blocking: bool = False) -> AudioBatch:
        """The batch with every tensor moved to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def pin_memory(self) -> AudioBatch:
        """Called by ``DataLoader(pin_memory=True)`` on custom batch types."""
        pinned = {
            f.name: getattr(self, f.name).pin_memory()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **pinned)


def collate_audio(items: Sequence[Mapping[str, Any]], pad_to_multiple_of: int = 1) -> AudioBatch:
    """Pad ``SpeechItem``-like mappings (keys ``wav id language source_text target_text
    index``) into an :class:`AudioBatch`. ``pad_to_multiple_of`` rounds the padded length S up
    (e.g. to the encoder's total conv stride, or 8 for tensor cores)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    if pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
    lengths = np.fromiter((len(it["wav"]) for it in items), dtype=np.int64, count=len(items))
    width = -(-int(lengths.max()) // pad_to_multiple_of) * pad_to_multiple_of
    values = np.zeros((len(items), width), dtype=np.float32)
    for row, it in enumerate(items):
        values[row, : lengths[row]] = it["wav"]
    lengths_t = torch.from_numpy(lengths)
    mask = (torch.arange(width).unsqueeze(0) < lengths_t.unsqueeze(1)).long()
    return AudioBatch(
        input_values=torch.from_numpy(values),
        lengths=lengths_t,
        attention_mask=mask,
        ids=[str(it["id"]) for it in items],
        languages=[str(it["language"]) for it in items],
        source_texts=[str(it["source_text"]) for it in items],
        target_texts=[str(it["target_text"]) for it in items],
        indices=[int(it["index"]) for it in items],
    )
