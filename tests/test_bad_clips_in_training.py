"""A clip whose header reads fine but whose samples do not (a float wav with NaN samples, a
truncated mp3) is skipped, logged and counted during training instead of stopping the run
(issue 17); past train.max_bad_clips the run stops with a message naming the first one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from samu_st.errors import AudioError, SamuError
from samu_st.training.task import BatchStream


class Clips:
    """Items 0..7; item 3 is unreadable, as load_audio reports NaN samples."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        if i in self.bad:
            raise AudioError(f"clip{i}.wav", "audio contains NaN or infinite samples")
        return i


class Pairs:
    """Batches [0, 1], [2, 3], ... each epoch."""

    def __init__(self) -> None:
        self.epoch = 0

    def __iter__(self) -> Any:
        return iter([[i, i + 1] for i in range(0, 8, 2)])

    def __len__(self) -> int:
        return 4

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]


def test_bad_clip_is_dropped_from_its_batch_and_counted() -> None:
    stream = BatchStream(Clips({3}), Pairs(), list, 0, 1, 0, False, max_bad_clips=5)
    batches = [stream.next() for _ in range(4)]
    assert batches == [[0, 1], [2], [4, 5], [6, 7]]
    assert len(stream.bad_clips) == 1 and "clip3.wav" in stream.bad_clips[0]


def test_a_batch_of_only_bad_clips_is_skipped() -> None:
    stream = BatchStream(Clips({2, 3}), Pairs(), list, 0, 1, 0, False, max_bad_clips=5)
    assert [stream.next() for _ in range(3)] == [[0, 1], [4, 5], [6, 7]]


def test_too_many_bad_clips_stop_the_run_naming_the_first() -> None:
    stream = BatchStream(Clips({1, 3, 5}), Pairs(), list, 0, 1, 0, False, max_bad_clips=2)
    with pytest.raises(SamuError, match=r"3 unreadable clips.*clip1\.wav"):
        for _ in range(4):
            stream.next()


def test_truncated_mp3_and_nan_wav_are_the_two_skipped_clips(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from fixtures_corpora import truncate, write_mp3
    from samu_st.data.collate import collate_audio
    from samu_st.data.dataset import SpeechDataset
    from samu_st.data.manifest import Utterance
    from samu_st.data.sampler import DurationBatchSampler

    clips = [write_mp3(tmp_path / f"c{i}.mp3", 2.0) for i in range(4)]
    truncate(clips[1], 0.2)  # the header still reads; a fifth of the audio decodes
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    paths = [*clips, nan]
    utts = [Utterance(f"u{i}", str(p), 2.0 if p.suffix == ".mp3" else 1.0, "fr", "x", "y",
                      "s", "train") for i, p in enumerate(paths)]  # fmt: skip
    dataset = SpeechDataset(utts, None)
    sampler = DurationBatchSampler(dataset.durations, 4.5, shuffle=False)
    stream = BatchStream(dataset, sampler, collate_audio, 0, 1, 0, False, max_bad_clips=5)
    seen = [stream.next() for _ in range(len(sampler))]
    assert len(seen) == len(sampler) and len(stream.bad_clips) == 2
    assert any("c1.mp3" in m and "truncated" in m for m in stream.bad_clips)
    assert any("nan.wav" in m and "NaN" in m for m in stream.bad_clips)
