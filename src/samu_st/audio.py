"""Audio input: decode with soundfile (libsndfile: wav, flac, ogg, mp3), downmix, resample with
soxr, speed perturbation, and wav2vec2-style normalisation.

All functions work on float32 mono numpy arrays of shape (S,). What the C decoders print to
stderr while a file is opened or decoded (mpg123: "Illegal Audio-MPEG-Header", "Giving up
resync") stays off the console: it ends in the :class:`AudioError` of a file that fails, else
in the DEBUG log (:mod:`samu_st.c_stderr`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from samu_st.c_stderr import capture_c_stderr
from samu_st.errors import AudioError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # wav2vec2 / XLS-R input rate
_SHORT_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
Seconds = float


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says, without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    duration: Seconds


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "audio file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty audio file (0 bytes)")


def _header(p: Path, f: sf.SoundFile) -> AudioInfo:
    """Checked header of an open file."""
    if f.samplerate <= 0 or f.channels <= 0:
        raise AudioError(p, "audio header has no sample rate or channels")
    # libsndfile clamps the frame count of a cut WAV/AIFF to the bytes present and notes
    # "data : N (should be M)" in its log: a truncated file, not a shorter clip.
    short = _SHORT_CHUNK.search(f.extra_info or "")
    if short is not None and int(short.group(1)) > int(short.group(2)):
        raise AudioError(
            p, f"truncated audio file (data chunk {short.group(2)} of {short.group(1)} bytes)"
        )
    return AudioInfo(f.samplerate, f.channels, f.frames, f.frames / f.samplerate)


def _decoder_said(text: str, max_lines: int = 6) -> str:
    """The distinct lines of a decoder's messages, the first ``max_lines`` of them, on one line."""
    lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
    more = f" (+{len(lines) - max_lines} more)" if len(lines) > max_lines else ""
    return " | ".join(lines[:max_lines]) + more


# Files that libsndfile decodes with mpg123, the library that prints to fd 2 itself. Only these
# are captured: a capture serialises decoding across threads (fd 2 belongs to the process),
# which cost 8 threads ~30 % of their mp3 throughput on 2 cores; WAV/FLAC pay nothing.
MPEG_SUFFIXES = frozenset({".mp3", ".mp2", ".mp1", ".mpga", ".mpeg"})


@contextmanager
def _quiet_decoder(p: Path) -> Iterator[None]:
    """For MPEG files, C-level stderr of the block captured: added to the :class:`AudioError`
    the block raises, else logged at DEBUG. Other exceptions pass through unchanged."""
    if p.suffix.lower() not in MPEG_SUFFIXES:
        yield
        return
    failure: AudioError | None = None
    with capture_c_stderr() as captured:
        try:
            yield
        except AudioError as err:
            failure = err
    said = _decoder_said(captured.text)
    if failure is not None:
        if not said:
            raise failure
        raise AudioError(p, f"{failure.reason}; the decoder said: {said}") from None
    if said:
        log.debug("%s: the decoder said: %s", p, said)


def _open(p: Path) -> sf.SoundFile:
    _check_path(p)
    with _quiet_decoder(p):
        try:
            return sf.SoundFile(str(p))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise AudioError(p, f"cannot read audio ({err})") from None


def audio_info(path: str | Path) -> AudioInfo:
    """Header information of an audio file; :class:`AudioError` naming the file when unreadable."""
    p = Path(path)
    with _open(p) as f:
        return _header(p, f)


def resample(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a mono float signal with soxr (high quality)."""
    if orig_sr == new_sr:
        return wav.astype(np.float32, copy=False)
    return np.asarray(soxr.resample(wav, orig_sr, new_sr, quality="HQ"), dtype=np.float32)


def load_audio(
    path: str | Path,
    sample_rate: int = SAMPLE_RATE,
    *,
    max_duration: Seconds | None = None,
) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sample_rate``.

    Multi-channel audio is averaged to mono. Audio that is truncated, corrupt, longer than
    ``max_duration`` seconds, empty, or contains NaN/inf samples raises :class:`AudioError`
    naming the file.
    """
    p = Path(path)
    with _open(p) as f:  # one open: header checks and decoding
        info = _header(p, f)
        if max_duration is not None and info.duration > max_duration:
            raise AudioError(
                p, f"{info.duration:.1f} s long, over the limit of {max_duration:.1f} s"
            )
        with _quiet_decoder(p):
            try:
                data = f.read(dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(p, f"cannot decode audio ({err})") from None
        sr = f.samplerate
    if data.shape[0] == 0:
        raise AudioError(p, "audio has no samples")
    if not np.isfinite(data).all():
        raise AudioError(p, "audio contains NaN or infinite samples")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(wav), sr, sample_rate)


def speed_perturb(wav: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speed perturbation with sox ``speed`` semantics: tempo and pitch change together.

    Equivalent to playing the signal ``factor`` times faster: resample from
    ``sample_rate * factor`` to ``sample_rate``, so the output has ``len / factor`` samples.
    """
    if factor <= 0 or not math.isfinite(factor):
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wav.astype(np.float32, copy=False)
    return np.asarray(
        soxr.resample(wav, sample_rate * factor, sample_rate, quality="HQ"), dtype=np.float32
    )


def normalize(wav: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Zero mean, unit variance, as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does."""
    wav = wav.astype(np.float32, copy=False)
    return ((wav - wav.mean()) / np.sqrt(wav.var() + eps)).astype(np.float32)


def is_silent(wav: np.ndarray, threshold_db: float = -60.0) -> bool:
    """Whether the signal's RMS is below ``threshold_db`` dBFS (digital silence or near it)."""
    if wav.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    return rms == 0.0 or 20.0 * math.log10(rms) < threshold_db
