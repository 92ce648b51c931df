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

    def make() -> None:
        calls.append(1)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.json").write_text("{}")

    assert made_once_on_main(folder, make) == folder
    assert calls == [1] and (folder / "tokenizer.json").read_text() == "{}"
    assert (folder / MADE_MARK).is_file()
    made_once_on_main(folder, make)  # complete now: reused
    assert calls == [1]
    made_once_on_main(folder, make, reuse=False)
    assert calls == [1, 1]
