"""A folder made once on the main process (a trained tokenizer) counts as made only when its
maker finished: a SIGKILL mid-save left a half-written tokenizer that the rerun then failed to
load ("Couldn't instantiate the backend tokenizer", issue 17)."""

from __future__ import annotations

from pathlib import Path

from samu_st.steps.speech_data import MADE_MARK, made_once_on_main


def test_half_written_folder_is_made_again(tmp_path: Path) -> None:
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "trunc')  # killed mid-write
    calls: list[int] = []

    def make(tmp: Path) -> None:
        calls.append(1)
        assert tmp != folder and not any(tmp.iterdir())  # a fresh temporary folder
        (tmp / "tokenizer.json").write_text("{}")

    assert made_once_on_main(folder, make, point="test") == folder
    assert calls == [1] and (folder / "tokenizer.json").read_text() == "{}"
    assert (folder / MADE_MARK).is_file()
    made_once_on_main(folder, make, point="test")  # complete now: reused
    assert calls == [1]
    made_once_on_main(folder, make, reuse=False, point="test")
    assert calls == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer"]  # no temporary left
