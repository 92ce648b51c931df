"""Map-style speech dataset over manifest utterances: decode, perturb, normalise.

Indexed by an ``int`` or by a :class:`~samu_st.data.sampler.SampleKey` ``(idx, speed)``. With
:class:`~samu_st.data.sampler.DurationBatchSampler` the sampler draws the speed factor (it
needs it to bucket the perturbed lengths), so resume is exact without any epoch state here
(DataLoader workers hold copies of the dataset, which a ``set_epoch`` on the main process
would not reach). Indexed by ``int`` (a plain torch sampler), the factor comes from a
generator seeded with ``(seed, epoch, index)``: still reproducible, given ``set_epoch``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from torch.utils.data import Dataset

from samu_st.audio import SAMPLE_RATE, load_audio, normalize, speed_perturb
from samu_st.data.manifest import Utterance, read_manifest, resolve_audio
from samu_st.data.sampler import SampleKey
from samu_st.errors import AudioError, ConfigError

Seconds = float
# A clip decoding to less than this share of its manifest duration is reported as truncated.
TRUNCATED_SHARE = 0.5


class SpeechItem(TypedDict):
    """One decoded utterance."""

    index: int  # position in the dataset
    id: str  # manifest id
    wav: np.ndarray  # (S,) float32 at the dataset's sample rate, perturbed and normalised
    language: str  # source-language code
    source_text: str
    target_text: str
    duration: Seconds  # len(wav) / sample_rate, after speed perturbation
    speed: float  # speed-perturbation factor applied (1.0: none)


class _ByteCache:
    """LRU cache of decoded waveforms bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, key: int) -> np.ndarray | None:
        wav = self._items.get(key)
        if wav is not None:
            self._items.move_to_end(key)
        return wav

    def put(self, key: int, wav: np.ndarray) -> None:
        if wav.nbytes > self.max_bytes:
            return
        while self.bytes + wav.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes
        wav.setflags(write=False)  # callers get views of the cached array; keep it intact
        self._items[key] = wav
        self.bytes += wav.nbytes

    def __len__(self) -> int:
        return len(self._items)


class SpeechDataset(Dataset[SpeechItem]):
    """Decoded audio and texts of ``utterances``.

    root: the manifest file the utterances came from, or the folder their relative audio paths
        are relative to (absolute paths are used as they are; None: the working directory).
    sample_rate: output rate in Hz.
    speed_factors: factors for on-the-fly speed perturbation when indexed by ``int``
        ((0.9, 1.0, 1.1) in the paper); keys from the sampler carry their own factor.
    normalize: zero mean, unit variance per utterance (wav2vec2 / XLS-R input).
    max_duration: clips longer than this (seconds, before perturbation) raise AudioError.
    cache_bytes: bound of an in-memory cache of decoded, resampled audio (0: none); it saves
        decoding every epoch on small corpora. Each DataLoader worker holds its own.
    seed: seed of the per-item speed choice for ``int`` keys.

    A clip that cannot be decoded raises :class:`~samu_st.errors.AudioError` naming the file.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        root: str | Path | None,
        *,
        sample_rate: int = SAMPLE_RATE,
        speed_factors: Sequence[float] = (1.0,),
        normalize: bool = True,
        max_duration: Seconds | None = None,
        cache_bytes: int = 0,
        seed: int = 0,
    ) -> None:
        if not speed_factors or any(f <= 0 for f in speed_factors):
            raise ConfigError(f"speed factors must be positive, got {list(speed_factors)}")
        base = Path(root).resolve() if root is not None else Path.cwd()
        if base.suffix == ".jsonl" or base.is_file():
            base = base.parent
        self.utterances = list(utterances)
        self.paths = [base / u.audio for u in self.utterances]  # absolute audio stays absolute
        self.sample_rate = sample_rate
        self.speed_factors = tuple(float(f) for f in speed_factors)
        self.normalize = normalize
        self.max_duration = max_duration
        self.seed = seed
        self.epoch = 0
        self.cache = _ByteCache(cache_bytes) if cache_bytes > 0 else None

    @classmethod
    def from_manifests(cls, paths: Sequence[str | Path], **kwargs: Any) -> SpeechDataset:
        """One dataset over several manifests, each resolving its own relative audio paths."""
        utts = [replace(u, audio=str(resolve_audio(u, p))) for p in paths for u in read_manifest(p)]
        return cls(utts, None, **kwargs)

    @property
    def durations(self) -> np.ndarray:
        """(N,) manifest durations in seconds, for the batch sampler."""
        return np.array([u.duration for u in self.utterances], dtype=np.float64)

    @property
    def languages(self) -> list[str]:
        return [u.language for u in self.utterances]

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the per-item speed choice for ``int`` keys."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.utterances)

    def _speed_for(self, index: int) -> float:
        if len(self.speed_factors) == 1:
            return self.speed_factors[0]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.speed_factors[int(rng.integers(len(self.speed_factors)))]

    def _decode(self, index: int) -> np.ndarray:
        wav = self.cache.get(index) if self.cache is not None else None
        if wav is None:
            wav = load_audio(self.paths[index], self.sample_rate, max_duration=self.max_duration)
            expected = self.utterances[index].duration
            if len(wav) < TRUNCATED_SHARE * expected * self.sample_rate:
                # a truncated mp3 decodes without error, to a fraction of its header's length
                raise AudioError(
                    self.paths[index],
                    f"decodes to {len(wav) / self.sample_rate:.2f} s but the manifest says "
                    f"{expected:.2f} s (truncated file?)",
                )
            if self.cache is not None:
                self.cache.put(index, wav)
        return wav

    def __getitem__(self, key: int | SampleKey) -> SpeechItem:
        if isinstance(key, tuple):
            index, speed = int(key[0]), float(key[1])
        else:
            index = int(key)
            speed = self._speed_for(index)
        if not 0 <= index < len(self.utterances):
            raise IndexError(f"index {index} out of range for {len(self.utterances)} utterances")
        wav = speed_perturb(self._decode(index), speed, self.sample_rate)
        if self.normalize:
            wav = normalize(wav)
        elif not wav.flags.writeable:
            wav = wav.copy()  # never hand out the cached buffer itself
        utt = self.utterances[index]
        return SpeechItem(
            index=index,
            id=utt.id,
            wav=wav,
            language=utt.language,
            source_text=utt.source_text,
            target_text=utt.target_text,
            duration=len(wav) / self.sample_rate,
            speed=speed,
        )
