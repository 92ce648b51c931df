import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import samu_st.data.dataset as dataset_mod
from samu_st.cli import main as cli_main
from samu_st.data.collate import AudioBatch, collate_audio
from samu_st.data.dataset import SpeechDataset
from samu_st.data.manifest import Utterance, read_manifest, write_manifest
from samu_st.data.sampler import DurationBatchSampler, SampleKey
from samu_st.errors import AudioError

SR = 16_000


def make_corpus(root: Path, durations: list[float], sr: int = SR) -> Path:
    """Tones of the given lengths under root/clips, a manifest root/train.jsonl with relative
    audio paths; returns the manifest path."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    utts = []
    rng = np.random.default_rng(0)
    for i, dur in enumerate(durations):
        wav = (0.1 * rng.standard_normal(int(dur * sr)) + 0.05).astype(np.float32)
        sf.write(root / "clips" / f"u{i}.wav", wav, sr, subtype="FLOAT")
        lang = "fr" if i % 2 else "cy"
        utts.append(
            Utterance(f"u{i}", f"clips/u{i}.wav", dur, lang, f"src {i}", f"tgt {i}", "s", "train")
        )
    manifest = root / "train.jsonl"
    write_manifest(manifest, utts)
    return manifest


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus", [0.5, 1.0, 0.25, 0.75, 0.6, 0.3])


def test_item_fields_normalised_and_relative_paths(corpus: Path) -> None:
    ds = SpeechDataset.from_manifests([corpus])
    assert len(ds) == 6
    np.testing.assert_allclose(ds.durations, [0.5, 1.0, 0.25, 0.75, 0.6, 0.3])
    item = ds[1]
    assert (item["index"], item["id"], item["language"]) == (1, "u1", "fr")
    assert (item["source_text"], item["target_text"]) == ("src 1", "tgt 1")
    assert item["wav"].dtype == np.float32 and item["wav"].shape == (SR,)
    assert abs(float(item["wav"].mean())) < 1e-4 and float(item["wav"].std()) == pytest.approx(
        1, abs=1e-3
    )
    assert item["duration"] == pytest.approx(1.0) and item["speed"] == 1.0
    relative = read_manifest(corpus)
    assert relative[1].audio == "clips/u1.wav"
    for root in (corpus, corpus.parent):  # the manifest file, or the folder paths start from
        raw = SpeechDataset(relative, root, normalize=False)[1]["wav"]
        assert float(raw.mean()) == pytest.approx(0.05, abs=0.01)  # not normalised


def test_sample_key_speed_and_seeded_int_speed(corpus: Path) -> None:
    ds = SpeechDataset.from_manifests([corpus], speed_factors=(0.9, 1.0, 1.1), seed=3)
    slow = ds[SampleKey(1, 0.9)]
    assert slow["speed"] == 0.9 and len(slow["wav"]) == pytest.approx(SR / 0.9, abs=2)
    assert slow["duration"] == pytest.approx(1 / 0.9, abs=1e-3)
    speeds_e0 = [ds[i]["speed"] for i in range(6)]
    assert speeds_e0 == [ds[i]["speed"] for i in range(6)]  # same (seed, epoch, index)
    again = SpeechDataset.from_manifests([corpus], speed_factors=(0.9, 1.0, 1.1), seed=3)
    assert [again[i]["speed"] for i in range(6)] == speeds_e0
    per_epoch = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        per_epoch.append(tuple(ds[i]["speed"] for i in range(6)))
    assert len(set(per_epoch)) > 1 and set(sum(per_epoch, ())) == {0.9, 1.0, 1.1}


def test_bad_clip_raises_audio_error_naming_file(corpus: Path) -> None:
    bad = corpus.parent / "clips" / "u2.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    ds = SpeechDataset.from_manifests([corpus])
    with pytest.raises(AudioError, match=r"u2\.wav"):
        ds[2]
    (corpus.parent / "clips" / "u3.wav").unlink()
    with pytest.raises(AudioError, match=r"u3\.wav: audio file not found"):
        ds[3]
    with pytest.raises(AudioError, match="over the limit"):
        SpeechDataset.from_manifests([corpus], max_duration=0.8)[1]
    with pytest.raises(IndexError):
        ds[6]


def test_cache_decodes_once_and_is_bounded(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    real = dataset_mod.load_audio

    def counting(path: Path, *a: object, **kw: object) -> np.ndarray:
        calls.append(path)
        return real(path, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dataset_mod, "load_audio", counting)
    ds = SpeechDataset.from_manifests([corpus], normalize=False, cache_bytes=4 * SR * 4)
    first = [ds[i]["wav"] for i in range(6)]
    first[0][:] = 7.0  # writing into a returned array must not corrupt the cache
    second = [ds[i]["wav"] for i in range(6)]
    assert len(calls) == 6  # all 3.4 s fit in 4 s of cache: decoded once
    assert ds.cache is not None and ds.cache.bytes == int(3.4 * SR) * 4
    assert float(np.abs(second[0] - 7.0).min()) > 1.0
    calls.clear()
    small = SpeechDataset.from_manifests([corpus], normalize=False, cache_bytes=SR * 4)
    for i in (5, 2, 5, 2, 1, 5):  # 0.3 s and 0.25 s fit together; the 1 s clip evicts both
        small[i]
    assert small.cache is not None and small.cache.bytes <= SR * 4
    assert [p.name for p in calls] == ["u5.wav", "u2.wav", "u1.wav", "u5.wav"]
    assert SpeechDataset.from_manifests([corpus]).cache is None


def test_collate_pads_with_zeros_and_mask() -> None:
    items = [
        {"wav": np.full(n, float(n), dtype=np.float32), "id": f"u{n}", "language": "fr",
         "source_text": "s", "target_text": "t", "index": n}
        for n in (3, 5, 2)
    ]  # fmt: skip
    batch = collate_audio(items)
    assert batch.input_values.shape == (3, 5) and batch.input_values.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 5, 2] and batch.lengths.dtype == torch.int64
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 0, 0, 0]]
    assert batch.input_values[0].tolist() == [3, 3, 3, 0, 0]
    assert batch.padding_fraction == pytest.approx(1 - 10 / 15)
    assert batch.ids == ["u3", "u5", "u2"] and batch.indices == [3, 5, 2]
    assert len(batch) == 3
    padded = collate_audio(items, pad_to_multiple_of=4)
    assert padded.input_values.shape == (3, 8) and padded.attention_mask.sum().item() == 10
    assert padded.to("cpu").lengths.tolist() == [3, 5, 2]
    with pytest.raises(ValueError):
        collate_audio([])


def test_dataloader_with_bucketed_sampler(corpus: Path) -> None:
    ds = SpeechDataset.from_manifests([corpus], speed_factors=(0.9, 1.0, 1.1))
    sampler = DurationBatchSampler(ds.durations, 2.4, speed_factors=ds.speed_factors, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_audio)
    batches: list[AudioBatch] = list(loader)
    assert sorted(i for b in batches for i in b.indices) == list(range(6))
    for b in batches:
        assert b.input_values.shape[1] * len(b) <= 2.4 * SR + len(b)  # rounding of soxr
        assert torch.equal(b.attention_mask.sum(1), b.lengths)


def test_cli_data_stats(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["data", "stats", str(corpus), "--max-duration", "2", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["utterances"] == 6
    assert stats["hours"] == pytest.approx(3.4 / 3600)
    assert stats["duration_s"]["median"] == pytest.approx(0.55)
    assert stats["languages"] == {
        "cy": {"utterances": 3, "hours": pytest.approx(1.35 / 3600)},
        "fr": {"utterances": 3, "hours": pytest.approx(2.05 / 3600)},
    }
    assert 0 <= stats["padding_bucketed"] < stats["padding_random"]
    assert cli_main(["data", "stats", str(corpus), "--max-duration", "2"]) == 0
    assert "duration-bucketed" in capsys.readouterr().out
    # A budget below the longest clip is a clean error, not a traceback.
    assert cli_main(["data", "stats", str(corpus), "--max-duration", "0.5"]) == 2
    assert "samu-st: error: max_duration=0.5 s is shorter than 3" in capsys.readouterr().err
