"""What libsndfile's mpg123 prints to stderr on a damaged mp3 ("Note: Illegal Audio-MPEG-Header
...", "[src/libmpg123/parse.c:...] error: Giving up resync") stays off the console (issue 17):
it goes into the AudioError of a clip that fails, or the DEBUG log of one that decodes, while
Python's own output and errors still surface."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fixtures_corpora import truncate, write_mp3
from samu_st.audio import load_audio
from samu_st.c_stderr import capture_c_stderr
from samu_st.errors import AudioError

CHATTER = ("Illegal Audio-MPEG-Header", "mpg123", "Xing stream")
NOTE = b"Note: Illegal Audio-MPEG-Header 0x49fb14c4 at offset 5760.\n"


def garble(path: Path, seed: int = 1) -> Path:
    """Junk bytes after the first frames: the header reads, decoding loses sync and fails."""
    data = path.read_bytes()
    path.write_bytes(data[:400] + np.random.default_rng(seed).bytes(3000) + data[400:])
    return path


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


DECODE_IN_THREADS = """
import sys
from concurrent.futures import ThreadPoolExecutor
from samu_st.audio import load_audio
from samu_st.errors import AudioError

def decode(path):
    try:
        return f"ok {path} {load_audio(path).size}"
    except AudioError as err:
        return f"error {err}"

with ThreadPoolExecutor(4) as pool:
    for line in pool.map(decode, sys.argv[1:]):
        print(line)
"""

RAW_SOUNDFILE = """
import sys
import soundfile as sf
for path in sys.argv[1:]:
    try:
        sf.read(path)
    except Exception as err:
        print("raw error", path, err)
"""


def test_damaged_mp3s_decode_without_decoder_chatter_on_stderr(tmp_path: Path) -> None:
    garbled = [str(garble(write_mp3(tmp_path / f"g{i}.mp3", 2.0))) for i in range(4)]
    cut = write_mp3(tmp_path / "cut.mp3", 2.0)
    truncate(cut, 0.2)  # the header reads; a fifth of the audio decodes
    files = [*garbled, str(cut)]
    raw = _python(RAW_SOUNDFILE, *files)  # soundfile alone: what a user saw before
    chatty = "Illegal Audio-MPEG-Header" in raw.stderr

    run = _python(DECODE_IN_THREADS, *files)
    assert run.returncode == 0, run.stderr
    assert not any(c in run.stderr for c in CHATTER), run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == len(files)
    for path, line in zip(garbled, lines, strict=False):  # the error still names the file
        assert line.startswith(f"error {path}: cannot decode audio"), line
        if chatty:  # ... and says what the decoder said
            assert "Illegal Audio-MPEG-Header" in line, line
    assert lines[-1].startswith(f"ok {cut} ")
    if not chatty:
        pytest.skip("this libsndfile prints no mpg123 messages; the fd-2 tests below still run")


def _fake_read(text: bytes, error: Exception | None = None):  # type: ignore[no-untyped-def]
    """A SoundFile.read that prints ``text`` to fd 2 from "C" and fails with ``error``."""

    def read(self: sf.SoundFile, *args: object, **kwargs: object) -> np.ndarray:
        os.write(2, text)
        if error is not None:
            raise error
        return np.full((1600, 1), 0.1, np.float32)

    return read


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """An mp3 (libsndfile decodes it with mpg123, whose messages are captured); the name is
    the tests' from before captures were limited to MPEG files."""
    path = tmp_path / "a.mp3"
    sf.write(path, np.full(16_000, 0.1, np.float32), 16_000, format="MP3")
    return path


def test_pcm_files_are_not_captured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """WAV/FLAC never go through mpg123: no capture, so decoding threads never wait."""
    path = tmp_path / "a.wav"
    sf.write(path, np.full(1600, 0.1, np.float32), 16_000)
    monkeypatch.setattr(sf.SoundFile, "read", _fake_read(b"from a C library\n"))
    assert load_audio(path).size == 1600
    assert "from a C library" in capfd.readouterr().err


def test_failing_decode_keeps_the_messages_in_its_error(
    wav: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sf.SoundFile, "read", _fake_read(NOTE, RuntimeError("internal error")))
    with pytest.raises(AudioError) as err:
        load_audio(wav)
    message = str(err.value)
    assert message.startswith(f"{wav}: cannot decode audio (internal error)")
    assert "Illegal Audio-MPEG-Header 0x49fb14c4" in message
    assert capfd.readouterr().err == ""


def test_successful_decode_logs_the_messages_at_debug(
    wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sf.SoundFile, "read", _fake_read(b"Warning: Xing stream size off\n"))
    with caplog.at_level(logging.DEBUG, logger="samu_st.audio"):
        assert load_audio(wav).size == 1600
    assert capfd.readouterr().err == ""
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(str(wav) in m and "Xing stream size off" in m for m in debug), debug


def test_python_errors_and_output_still_surface(
    wav: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sf.SoundFile, "read", _fake_read(NOTE, ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):  # not turned into an AudioError
        load_audio(wav)
    os.write(2, b"after the decode\n")  # fd 2 is back where it was
    print("python stderr", file=sys.stderr)
    err = capfd.readouterr().err
    assert "after the decode" in err and "python stderr" in err
    assert "Illegal" not in err


def test_capture_keeps_decoder_lines_and_passes_other_output_on(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with capture_c_stderr() as captured:
        os.write(2, NOTE)
        os.write(2, b"[src/libmpg123/parse.c:wetwork():1349] error: Giving up resync\n")
        os.write(2, b"12:00:01 WARNING samu_st.x: another thread's log line\n")
    assert captured.text.splitlines() == [
        NOTE.decode().strip(),
        "[src/libmpg123/parse.c:wetwork():1349] error: Giving up resync",
    ]
    assert capfd.readouterr().err == "12:00:01 WARNING samu_st.x: another thread's log line\n"
    with pytest.raises(KeyError), capture_c_stderr() as captured:
        os.write(2, NOTE)
        raise KeyError("x")
    assert "Illegal" in captured.text and capfd.readouterr().err == ""


def test_concurrent_captures_each_get_their_own_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    texts: dict[int, str] = {}

    def work(i: int) -> None:
        with capture_c_stderr() as captured:
            os.write(2, f"Note: clip {i} begins\n".encode())
            time.sleep(0.01)  # other threads try to capture meanwhile
            os.write(2, f"Note: clip {i} ends\n".encode())
        texts[i] = captured.text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts == {i: f"Note: clip {i} begins\nNote: clip {i} ends\n" for i in range(6)}
    assert capfd.readouterr().err == ""
