"""A cache of the frozen conv front end's outputs, per clip, for training.

In step 3 (and in step 2, as the paper runs it) the conv feature encoder of wav2vec2/XLS-R is
frozen and no waveform augmentation happens after the speed perturbation: the conv stack maps
the same clip to the same features in every epoch. On the ``mini`` encoder that stack is about
half of the encoder's forward time (2026-12-05, 2-core AMD EPYC, bf16 autocast, 30 s batch:
86 of 158 ms), so training recomputes it epoch after epoch for nothing.

:class:`FrontEndCache` keeps those outputs in memory, keyed by a digest of the clip's samples
(what the conv stack sees, after normalisation and speed perturbation: another speed factor is
another clip, nothing goes stale), up to a byte budget (least recently used out). In
:meth:`FrontEndCache.serve` the clips of a batch it has not seen are run through the conv stack
as a sub-batch, and the model's ``feature_extractor`` returns the assembled (B, C, T) tensor
for that one forward: transformers' ``Wav2Vec2Model.forward`` runs unchanged from the feature
projection on (its dropout, SpecAugment masking and the adapters still run every step).

It serves only where the result is the same as without it:

- in training mode (validation and decoding run the conv stack as usual);
- a conv stack whose parameters are all frozen and whose input is not made to require grad;
- ``feat_extract_norm == "layer"`` (XLS-R, HuBERT/WavLM large): each valid frame depends only
  on its own clip's samples. A GroupNorm stack (wav2vec2-base) normalises over the padded
  batch, so it is never cached;
- the frames past a clip's valid length are zeros instead of the conv of the padding: the
  model masks them (``Wav2Vec2Encoder`` zeroes them before the positional conv and attention
  ignores them), so the valid outputs do not change.

The wrapped families (w2v-BERT, Whisper: :mod:`samu_st.models.family_model`) compute their
features inside their own forward and are not served.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class FrontEndCacheStats:
    """Counts since the cache was made: clips served from memory, clips computed, evictions."""

    hits: int = 0
    misses: int = 0
    evicted: int = 0


def front_end_is_cacheable(model: nn.Module) -> bool:
    """True where :class:`FrontEndCache` may serve ``model``'s conv stack (module docstring)."""
    extractor = getattr(model, "feature_extractor", None)
    config = getattr(model, "config", None)
    if not isinstance(extractor, nn.Module):
        return False
    if not hasattr(model, "_get_feat_extract_output_lengths"):
        return False
    if getattr(config, "feat_extract_norm", None) != "layer":
        return False
    if getattr(extractor, "_requires_grad", False):
        return False
    return not any(p.requires_grad for p in extractor.parameters())


def _conv_frames(model: Any, samples: torch.Tensor) -> torch.Tensor:
    """Frames out of the conv stack alone (not the length adaptor some wav2vec2 models add)."""
    lengths = model._get_feat_extract_output_lengths
    if "add_adapter" in inspect.signature(lengths).parameters:
        return lengths(samples, add_adapter=False).to(torch.long)
    return lengths(samples).to(torch.long)


def clip_digest(samples: torch.Tensor) -> bytes:
    """A 16-byte digest of one clip's samples (1-D), dtype and length included."""
    data = samples.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(str(data.dtype).encode())
    h.update(data.view(torch.uint8).numpy().tobytes())
    return h.digest()


class FrontEndCache:
    """Frozen conv front-end outputs per clip, bounded by ``max_bytes`` (module docstring)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.stats = FrontEndCacheStats()
        self._store: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()
        self.bytes = 0

    def _put(self, key: tuple[Any, ...], value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        while self.bytes + size > self.max_bytes and self._store:
            _, old = self._store.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
            self.stats.evicted += 1
        self._store[key] = value
        self.bytes += size

    def features(
        self, model: nn.Module, input_values: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """The conv stack's (B, C, T) output for the padded batch ``input_values`` (B, S) with
        ``lengths`` (B,): cached clips from memory, the others computed (and kept); zeros on
        the frames past each clip's valid length."""
        net: Any = model
        device = input_values.device
        autocast = (
            torch.is_autocast_enabled(device.type),
            torch.get_autocast_dtype(device.type),
        )
        frames = _conv_frames(net, lengths.to(torch.long))
        width = int(_conv_frames(net, torch.tensor([input_values.shape[1]]))[0])
        counts = [int(n) for n in lengths.tolist()]
        host = input_values.detach().to("cpu")  # one copy off an accelerator, not one per clip
        keys = [(clip_digest(host[row, :n]), str(device), autocast) for row, n in enumerate(counts)]
        found: dict[int, torch.Tensor] = {}
        for row, key in enumerate(keys):
            value = self._store.get(key)
            if value is not None:
                self._store.move_to_end(key)
                found[row] = value
        missing = [row for row in range(len(keys)) if row not in found]
        self.stats.hits += len(found)
        self.stats.misses += len(missing)
        if missing:
            span = max(counts[row] for row in missing)
            with torch.no_grad():
                out = net.feature_extractor(input_values[missing, :span])
            for j, row in enumerate(missing):
                value = out[j, :, : int(frames[row])].detach().clone()
                found[row] = value
                self._put(keys[row], value)
        first = found[0]
        batch = first.new_zeros(len(keys), first.shape[0], width)
        for row, value in found.items():
            batch[row, :, : value.shape[1]] = value
        return batch

    @contextmanager
    def serve(
        self, model: nn.Module, input_values: torch.Tensor, lengths: torch.Tensor
    ) -> Iterator[None]:
        """Within this block, ``model.feature_extractor`` returns the cached features of this
        batch instead of running (when :func:`front_end_is_cacheable` and ``model.training``;
        otherwise the block runs as usual)."""
        if not (model.training and front_end_is_cacheable(model)):
            yield
            return
        batch = self.features(model, input_values, lengths)
        extractor: Any = model.feature_extractor

        def served(values: torch.Tensor) -> torch.Tensor:
            if values.shape[0] != batch.shape[0]:
                raise RuntimeError("the front-end cache served a batch of another size")
            return batch

        extractor.forward = served
        try:
            yield
        finally:
            del extractor.forward


def make_front_end_cache(megabytes: int) -> FrontEndCache | None:
    """A cache of ``megabytes`` MB (``data.front_end_cache_mb``), or None for 0."""
    if megabytes < 0:
        raise ValueError(f"front_end_cache_mb must be >= 0, got {megabytes}")
    return FrontEndCache(megabytes * 2**20) if megabytes > 0 else None


def describe(cache: FrontEndCache | None) -> str:
    """One line for the log: how much the cache served."""
    if cache is None:
        return "front-end cache: off"
    s = cache.stats
    return (
        f"front-end cache: {s.hits} clips served, {s.misses} computed, {s.evicted} evicted, "
        f"{cache.bytes / 2**20:.1f} of {cache.max_bytes / 2**20:.0f} MB"
    )


def serve_front_end(
    cache: FrontEndCache | None,
    model: nn.Module,
    input_values: torch.Tensor,
    lengths: torch.Tensor,
) -> Any:
    """``cache.serve(...)``, or a block that does nothing when ``cache`` is None."""
    if cache is None:
        return nullcontext()
    return cache.serve(model, input_values, lengths)
