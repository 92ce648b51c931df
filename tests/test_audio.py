from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from samu_st.audio import (
    SAMPLE_RATE,
    audio_info,
    is_silent,
    load_audio,
    normalize,
    resample,
    speed_perturb,
)
from samu_st.errors import AudioError


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_load_any_libsndfile_format_to_16k_mono(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"a.{ext}"
    x = tone(1.0, 48_000)
    sf.write(path, np.stack([x, x], axis=1), 48_000)
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (48_000, 2)
    assert info.duration == pytest.approx(1.0, abs=0.06)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == pytest.approx(SAMPLE_RATE, abs=0.06 * SAMPLE_RATE)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    left, right = tone(0.5, 16_000, 300), tone(0.5, 16_000, 500)
    sf.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [8_000, 22_050, 48_000])
def test_resampled_tone_keeps_its_frequency(tmp_path: Path, sr: int) -> None:
    path = tmp_path / "t.wav"
    sf.write(path, tone(1.0, sr, 1000.0), sr, subtype="FLOAT")
    wav = load_audio(path)
    assert len(wav) == SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(wav))
    assert np.argmax(spectrum) == pytest.approx(1000, abs=2)  # 1 Hz bins for 1 s


def test_speed_perturbation_changes_tempo_and_pitch_together() -> None:
    wav = tone(1.0, SAMPLE_RATE, 1000.0)
    fast = speed_perturb(wav, 1.1)
    slow = speed_perturb(wav, 0.9)
    assert len(fast) == pytest.approx(SAMPLE_RATE / 1.1, abs=2)
    assert len(slow) == pytest.approx(SAMPLE_RATE / 0.9, abs=2)
    # sox `speed`: pitch scales with the factor (a 1 kHz tone becomes 1.1 kHz).
    peak_hz = np.argmax(np.abs(np.fft.rfft(fast))) * SAMPLE_RATE / len(fast)
    assert peak_hz == pytest.approx(1100, rel=0.01)
    assert speed_perturb(wav, 1.0) is not None
    with pytest.raises(ValueError):
        speed_perturb(wav, 0.0)


def test_normalize_matches_wav2vec2_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    wav = tone(0.5, SAMPLE_RATE) + 0.1
    ref = Wav2Vec2FeatureExtractor(do_normalize=True)(wav, sampling_rate=SAMPLE_RATE)
    np.testing.assert_allclose(normalize(wav), ref.input_values[0], atol=1e-5)
    out = normalize(wav)
    assert abs(float(out.mean())) < 1e-5 and float(out.std()) == pytest.approx(1.0, abs=1e-3)


def test_resample_identity_is_noop() -> None:
    wav = tone(0.1, SAMPLE_RATE)
    assert np.array_equal(resample(wav, SAMPLE_RATE, SAMPLE_RATE), wav)


def test_silence_detection() -> None:
    assert is_silent(np.zeros(1600, dtype=np.float32))
    assert is_silent(np.full(1600, 1e-5, dtype=np.float32))
    assert not is_silent(tone(0.1, SAMPLE_RATE))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "empty audio file"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "cannot read audio"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["missing", "zero-byte", "corrupt", "directory"],
)
def test_bad_files_name_the_file(tmp_path: Path, make, needle: str) -> None:
    path = tmp_path / "bad.mp3"
    make(path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_truncated_wav_is_an_error_or_shorter(tmp_path: Path) -> None:
    path = tmp_path / "t.wav"
    sf.write(path, tone(1.0, SAMPLE_RATE), SAMPLE_RATE)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # header cut in the middle
    with pytest.raises(AudioError, match=r"t\.wav"):
        load_audio(path)


def test_nan_samples_and_max_duration(tmp_path: Path) -> None:
    path = tmp_path / "n.wav"
    x = tone(0.2, SAMPLE_RATE)
    x[100] = np.nan
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)
    long = tmp_path / "long.wav"
    sf.write(long, tone(2.0, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AudioError, match="over the limit"):
        load_audio(long, max_duration=1.0)
