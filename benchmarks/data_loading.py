"""Benchmark ``data_loading``: decode an mp3 and resample it to 16 kHz, clips per second.

Ours: :func:`samu_st.audio.load_audio` (soundfile/libsndfile decoding, soxr resampling).
Reference: the notebook's way, ``librosa.load(path, sr=16000)``; if librosa is not installed,
``torchaudio.load`` + ``torchaudio.functional.resample`` (the notebook's other path); if neither
is, the reference is marked unavailable (never replaced by something else).

The clips are mini-CoVoST training clips re-encoded as mp3 by soundfile at 48 kHz and
44.1 kHz (Common Voice's rates), made once and cached. Each side decodes every clip once
untimed (page cache, lazy initialisation), then in timed passes alternating with the other
side; a side's best pass counts.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from benchmarks.common import Record, ratio
from benchmarks.corpus import Context, read_split
from samu_st.audio import SAMPLE_RATE, load_audio

Loader = Callable[[Path], np.ndarray]
RATES = (48_000, 44_100)
PASSES = 2


def make_clips(ctx: Context, count: int) -> list[Path]:
    """``count`` mp3 clips (alternately 48 and 44.1 kHz) in the cache folder."""
    folder = ctx.work / f"mp3-{'quick' if ctx.quick else 'full'}-{count}"
    if not folder.is_dir():
        utts = read_split(ctx.corpus(), "train")
        step = max(1, len(utts) // count)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, utt in enumerate(utts[::step][:count]):
            rate = RATES[i % len(RATES)]
            wav = load_audio(utt.audio, rate)
            sf.write(tmp / f"{i:04d}-{rate}.mp3", wav, rate, format="MP3", subtype="MPEG_LAYER_III")
        tmp.rename(folder)
    return sorted(folder.glob("*.mp3"))


def ours_loader() -> Loader:
    return lambda path: load_audio(path, SAMPLE_RATE)


def reference_loader() -> tuple[Loader | None, str]:
    """The notebook's decoder if installed, and a description (or why there is none)."""
    if importlib.util.find_spec("librosa") is not None:
        import librosa

        def librosa_load(path: Path) -> np.ndarray:
            return np.asarray(librosa.load(str(path), sr=SAMPLE_RATE)[0])

        return (
            librosa_load,
            f"librosa.load(path, sr=16000) (librosa {importlib.metadata.version('librosa')})",
        )
    if importlib.util.find_spec("torchaudio") is not None:
        import torchaudio

        def torchaudio_load(path: Path) -> np.ndarray:
            wav, rate = torchaudio.load(str(path))
            wav = torchaudio.functional.resample(wav.mean(0), rate, SAMPLE_RATE)
            return wav.numpy()

        return torchaudio_load, "torchaudio.load + torchaudio.functional.resample"
    return None, "neither librosa nor torchaudio is installed (PyPI: librosa)"


def _timed_pass(load: Loader, clips: list[Path]) -> tuple[float, float]:
    """(wall seconds, audio seconds) of decoding every clip once."""
    start = time.perf_counter()
    samples = sum(len(load(path)) for path in clips)
    return time.perf_counter() - start, samples / SAMPLE_RATE


def _summary(passes: list[tuple[float, float]], clips: int) -> dict[str, Any]:
    wall, audio = min(passes)
    return {
        "clips": clips,
        "best_pass_seconds": round(wall, 4),
        "all_pass_seconds": [round(w, 4) for w, _ in passes],
        "clips_per_sec": round(clips / wall, 2),
        "audio_sec_per_sec": round(audio / wall, 1),
        "ms_per_clip": round(1000 * wall / clips, 3),
    }


def run(ctx: Context) -> Record:
    sz = ctx.sizes
    rec = Record("data_loading", ctx.quick)
    clips = make_clips(ctx, sz.mp3_clips)
    ours = ours_loader()
    reference, description = reference_loader()
    sides: dict[str, Loader] = {"ours": ours}
    if reference is not None:
        sides["reference"] = reference
    for load in sides.values():  # untimed: page cache, lazy initialisation
        _timed_pass(load, clips)
    passes: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(PASSES):
        for name, load in sides.items():
            passes[name].append(_timed_pass(load, clips))
    seconds = [sf.info(str(p)).duration for p in clips]
    rec.setup = {
        "clips": len(clips),
        "sample_rates": list(RATES),
        "mean_clip_seconds": round(float(np.mean(seconds)), 3),
        "encoder": f"soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__}) MP3",
        "timed_passes_per_side": PASSES,
    }
    rec.ours = {
        "method": "samu_st.audio.load_audio (soundfile decode + soxr HQ resample)",
        **_summary(passes["ours"], len(clips)),
    }
    if reference is None:
        rec.reference = {
            "method": "librosa.load(path, sr=16000)",
            "available": False,
            "reason": description,
        }
        rec.ratios = {"clips_per_sec": None}
        rec.notes = [f"reference unavailable: {description}; add it to measure the ratio"]
    else:
        rec.reference = {
            "method": description,
            "available": True,
            **_summary(passes["reference"], len(clips)),
        }
        rec.ratios = {
            "clips_per_sec": ratio(
                rec.ours["clips_per_sec"], rec.reference["clips_per_sec"], higher_is_better=True
            )
        }
    rec.headline = "clips_per_sec"
    return rec
