"""Synthetic speakers for mini-CoVoST: espeak-ng voice variants, rates and pitches.

A speaker is a (variant, rate, pitch) triple; ``espeak-ng -v fr+m3 -s 172 -p 41 42`` is speaker
``m3-s172-p41`` saying 42 in French. espeak-ng output is deterministic for the same arguments,
so a clip's bytes depend only on the text, the voice and the speaker.
"""

from __future__ import annotations

import io
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from samu_st.audio import SAMPLE_RATE, resample
from samu_st.errors import SamuError

ESPEAK = "espeak-ng"
VARIANT_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, order=True)
class Speaker:
    """One synthetic speaker."""

    variant: str  # espeak-ng voice variant file name, e.g. "m3", "f2", "klatt"
    rate: int  # speaking rate in words per minute (espeak-ng -s; its default is 175)
    pitch: int  # base pitch 0-99 (espeak-ng -p; its default is 50)

    @property
    def id(self) -> str:
        return f"{self.variant}-s{self.rate}-p{self.pitch}"

    def espeak_args(self, voice: str) -> list[str]:
        return ["-v", f"{voice}+{self.variant}", "-s", str(self.rate), "-p", str(self.pitch)]


def _run_espeak(args: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    if shutil.which(ESPEAK) is None:
        raise SamuError(
            f"{ESPEAK} not found on PATH; install it (Debian: apt-get install espeak-ng)"
        )
    return subprocess.run([ESPEAK, *args], capture_output=True, check=False)


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """``espeak-ng --version``'s version number, e.g. ``"1.51"``."""
    out = _run_espeak(["--version"]).stdout.decode("utf-8", "replace")
    match = re.search(r"text-to-speech:\s*(\S+)", out)
    return match.group(1) if match else out.strip()


@lru_cache(maxsize=1)
def espeak_voices() -> frozenset[str]:
    """Names ``-v`` accepts for languages: the language codes and the voice file names."""
    out = _run_espeak(["--voices"]).stdout.decode("utf-8", "replace")
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5:
            names.add(parts[1])
            names.add(parts[4].rsplit("/", 1)[-1])
    return frozenset(names)


@lru_cache(maxsize=1)
def espeak_variants() -> frozenset[str]:
    """Voice variant names (``espeak-ng --voices=variant``, the part after ``+``)."""
    out = _run_espeak(["--voices=variant"]).stdout.decode("utf-8", "replace")
    return frozenset(re.findall(r"!v/(\S+)", out))


def check_espeak(voices: Sequence[str], variants: Sequence[str]) -> None:
    """Fail early, listing what is missing, if espeak-ng lacks a voice or variant we need."""
    missing_voices = sorted(set(voices) - espeak_voices())
    missing_variants = sorted(set(variants) - espeak_variants())
    if missing_voices or missing_variants:
        raise SamuError(
            f"espeak-ng {espeak_version()} lacks voice(s) {missing_voices or '-'} and "
            f"variant(s) {missing_variants or '-'}; see `espeak-ng --voices` and "
            "`espeak-ng --voices=variant`"
        )


def make_speakers(
    variants: Sequence[str],
    count: int,
    rate_range: tuple[int, int],
    pitch_range: tuple[int, int],
    rng: random.Random,
) -> tuple[Speaker, ...]:
    """``count`` distinct speakers; the variants are used in turn, so each appears when possible.

    Rates and pitches are drawn uniformly (integers, bounds included) from ``rng``.
    """
    order = sorted(variants)
    rng.shuffle(order)
    combos = (
        len(order) * (rate_range[1] - rate_range[0] + 1) * (pitch_range[1] - pitch_range[0] + 1)
    )
    if count > combos:
        raise SamuError(f"cannot make {count} distinct speakers from {combos} combinations")
    speakers: list[Speaker] = []
    seen: set[Speaker] = set()
    i = 0
    while len(speakers) < count:
        spk = Speaker(order[i % len(order)], rng.randint(*rate_range), rng.randint(*pitch_range))
        i += 1
        if spk not in seen:
            seen.add(spk)
            speakers.append(spk)
    return tuple(speakers)


def trim_silence(wav: np.ndarray, threshold_db: float, margin: int) -> np.ndarray:
    """Cut leading/trailing samples quieter than ``threshold_db`` below the peak, keeping
    ``margin`` samples of context on each side. ``wav``: (S,) → (S',)."""
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak == 0.0:
        return wav
    loud = np.flatnonzero(np.abs(wav) > peak * 10.0 ** (threshold_db / 20.0))
    start = max(0, int(loud[0]) - margin)
    end = min(wav.size, int(loud[-1]) + 1 + margin)
    return wav[start:end]


def synthesize(
    text: str,
    voice: str,
    speaker: Speaker,
    *,
    trim_db: float = -40.0,
    margin: float = 0.05,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Speak ``text`` with espeak-ng; int16 mono samples at ``sample_rate``, silence trimmed.

    Returns (S,) int16. espeak-ng writes 22.05 kHz; the clip is resampled with soxr and
    quantised here so the bytes written later are exactly these samples.
    """
    args = [*speaker.espeak_args(voice), "--stdout", "--", text]
    proc = _run_espeak(args)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise SamuError(f"{ESPEAK} {' '.join(args)} failed ({proc.returncode}): {err}")
    data, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    wav = resample(np.ascontiguousarray(data[:, 0]), sr, sample_rate)
    wav = trim_silence(wav, trim_db, round(margin * sample_rate))
    return np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Job:
    """One clip to render: ``speaker`` says ``text`` with ``voice`` into ``path``."""

    text: str
    voice: str  # espeak-ng voice of the language, e.g. "fr", "cmn"
    speaker: Speaker
    path: Path  # .wav or .flac: written as 16-bit PCM at SAMPLE_RATE


def render(job: Job, trim_db: float, margin: float) -> int:
    """Synthesise and write one clip; its length in samples (0: silent, nothing written)."""
    samples = synthesize(job.text, job.voice, job.speaker, trim_db=trim_db, margin=margin)
    if samples.size == 0 or int(np.abs(samples.astype(np.int32)).max()) < 33:  # < -60 dBFS
        return 0
    fmt = "FLAC" if job.path.suffix == ".flac" else "WAV"
    sf.write(job.path, samples, SAMPLE_RATE, subtype="PCM_16", format=fmt)
    return int(samples.size)


def render_all(
    jobs: Sequence[Job],
    trim_db: float,
    margin: float,
    workers: int,
    progress: bool = True,
    desc: str = "espeak-ng",
    skip_failures: bool = False,
) -> list[int]:
    """Render ``jobs`` with ``workers`` threads, each driving espeak-ng processes.

    Returns each job's length in samples, in the order of ``jobs``; the first failure is raised
    after the jobs not yet started are cancelled, or, with ``skip_failures``, that job's
    length is -1 (espeak-ng 1.51 crashes on a few voice/text pairs, e.g. dates in Greenlandic).
    """
    frames = [0] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=None if progress else True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(render, job, trim_db, margin): i for i, job in enumerate(jobs)}
        try:
            for fut in as_completed(futures):
                try:
                    frames[futures[fut]] = fut.result()
                except SamuError:
                    if not skip_failures:
                        raise
                    frames[futures[fut]] = -1
                bar.update()
        finally:
            for fut in futures:
                fut.cancel()
            bar.close()
    return frames
