"""Bad-input battery: broken audio, TSVs, manifests and configs fed to the real ``samu-st`` CLI.

Every case builds its input in a scratch folder, usually after a GOOD import into the same
output folder, then runs a ``samu-st`` command and checks three things:

- the outcome: a clean error (exit code != 0, a ``samu-st: error:`` line naming the file, and
  the line for TSV/manifest cases), a counted skip (exit 0, the reason counted in
  ``import_report.json`` with a ``file:line`` example), or an accepted input (exit 0, checked);
- nothing written before is damaged: after an error, every earlier file of the output folder is
  byte-identical; after a skip, every manifest line of a clip that is still good is identical;
- no half-written file is left (no ``.*.tmp*`` in the output folder).

A case with ``bug`` set is a known defect (the reason says where and what to fix); the pytest
module marks it ``xfail(strict=True)`` so it turns red once fixed and the mark must go.

    python scripts/bad_input_battery.py [--subprocess] [--keep DIR] [CASE ...]

prints ``case | outcome | message`` and exits 1 if an unexpected result occurred.
``--subprocess`` runs each command as ``python -m samu_st`` (slower; the default calls
``samu_st.cli.main`` in-process, which is the same code path minus interpreter start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures_corpora

from fixtures_corpora import (
    CV_COLUMNS,
    CvFolder,
    corrupt,
    make_commonvoice,
    make_covost,
    tone,
    truncate,
    write_mp3,
    write_raw_tsv,
)

Outcome = Literal["error", "skip", "ok"]
Problems = list[str]


@dataclass
class Run:
    """What one command did."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str
    traceback: str | None = None  # an exception escaped main(): always a bug

    @property
    def error_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("samu-st: error:")]
        return lines[-1].removeprefix("samu-st: error:").strip() if lines else ""


@dataclass
class Setup:
    """A prepared case: the command to run and what must come of it."""

    argv: list[str]
    expect: Outcome
    mentions: tuple[str, ...] = ()  # substrings of the message: the file, ":line"
    reason: str | None = None  # skip reason that import_report.json must count
    out: Path | None = None  # folder whose earlier content must survive the run
    verify: Callable[[], Problems] | None = None  # extra checks after the run


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line: the bad input
    build: Callable[[Path], Setup]
    bug: str | None = None  # known defect: where and what to fix


@dataclass
class Result:
    case: str
    outcome: str  # error, skip, ok, or TRACEBACK
    code: int
    message: str
    problems: Problems = field(default_factory=list)


# --- running the CLI ---------------------------------------------------------------------------


def run_cli(argv: Sequence[str], subprocess_mode: bool = False) -> Run:
    """``samu-st ARGV`` in-process (``samu_st.cli.main``) or as ``python -m samu_st``."""
    argv = [str(a) for a in argv]
    if subprocess_mode:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "samu_st", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        tb = proc.stderr if "Traceback (most recent call last)" in proc.stderr else None
        return Run(argv, proc.returncode, proc.stdout, proc.stderr, tb)
    from samu_st.cli import main

    out, err = io.StringIO(), io.StringIO()
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:  # what the user would see as a traceback
            tb, code = traceback.format_exc(), 1
    return Run(argv, code, out.getvalue(), err.getvalue(), tb)


def must_succeed(argv: Sequence[str]) -> None:
    run = run_cli(argv)
    if run.code != 0 or run.traceback:
        raise RuntimeError(f"setup command failed: {argv}\n{run.stderr}{run.traceback or ''}")


# --- inputs ------------------------------------------------------------------------------------


def write_sparse_wav(path: Path, seconds: float, sample_rate: int = 8000) -> Path:
    """A PCM-16 mono WAV of digital silence whose data is a hole in the file (no disk used)."""
    nbytes = int(seconds * sample_rate) * 2
    header = b"RIFF" + struct.pack("<I", 36 + nbytes) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    header += b"data" + struct.pack("<I", nbytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + nbytes)
    return path


def write_wav(
    path: Path, seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16"
) -> Path:
    x = tone(seconds, rate)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate, subtype=subtype)
    return path


PREP = ["--workers", "2"]


def cv_out(tmp: Path, strict: bool = False) -> tuple[CvFolder, Path, list[str]]:
    """A Common Voice folder imported once into ``tmp/out``; the argv that re-imports it."""
    folder = make_commonvoice(tmp / "cv", counts={"train": 3, "dev": 1, "test": 1})
    out = tmp / "out"
    argv = ["prepare", "commonvoice", str(folder.lang_dir), "--out", str(out), *PREP]
    must_succeed(argv)
    return folder, out, argv + (["--strict"] if strict else [])


def set_clip(folder: CvFolder, row: int, name: str) -> Path:
    """Point train.tsv row ``row`` (file line row + 2) at clip ``name``; returns its path."""
    folder.rows["train"][row]["path"] = name
    folder.write_tsvs()
    return folder.clips / name


def train_tsv_line(folder: CvFolder, row: int = 0) -> str:
    return f"{folder.tsv('train')}:{row + 2}"


def manifest_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def kept_clip(out: Path, name: str, seconds: float) -> Callable[[], Problems]:
    """Check: train manifest lists ``name`` with ``seconds``; it decodes to mono 16 kHz."""

    def verify() -> Problems:
        from samu_st.audio import load_audio
        from samu_st.data.manifest import read_manifest

        found = [u for u in read_manifest(out / "train" / "ga-IE.jsonl") if u.audio.endswith(name)]
        if not found:
            return [f"{name} missing from the train manifest"]
        problems = []
        if not math.isclose(found[0].duration, seconds, abs_tol=0.01):
            problems.append(f"duration {found[0].duration} != {seconds}")
        wav = load_audio(found[0].audio)
        if wav.ndim != 1 or abs(len(wav) - seconds * 16000) > 160:
            problems.append(f"decoded shape {wav.shape}, expected ({seconds * 16000:.0f},)")
        return problems

    return verify


# --- cases: audio (prepare commonvoice; bad clips are skipped and counted) ---------------------


def _clip_case(
    mutate: Callable[[CvFolder], object], reason: str, *flags: str, mention: str = ""
) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder, out, argv = cv_out(tmp)
        mutate(folder)
        mentions = (train_tsv_line(folder), *((mention,) if mention else ()))
        return Setup([*argv, *flags], "skip", mentions, reason, out)

    return build


def _ok_clip(name: str, seconds: float, write: Callable[[Path], object]) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        folder, out, argv = cv_out(tmp)
        write(set_clip(folder, 0, name))
        return Setup(argv, "ok", out=out, verify=kept_clip(out, name, seconds))

    return build


def _truncated_wav(folder: CvFolder) -> None:
    path = set_clip(folder, 0, "cut.wav")
    write_wav(path, 1.0, 16000)
    truncate(path, 0.5)


def _truncated_mp3(folder: CvFolder) -> None:
    path = folder.clip("train", 0)
    write_mp3(path, 3.0)
    truncate(path, 0.4)


def _nan_wav(folder: CvFolder) -> None:
    x = tone(0.5, 16000)
    x[100:200] = np.nan
    sf.write(set_clip(folder, 0, "nan.wav"), x, 16000, subtype="FLOAT")


def _clip_is_dir(folder: CvFolder) -> None:
    path = folder.clip("train", 0)
    path.unlink()
    path.mkdir()


AUDIO_CASES = [
    Case(
        "corrupt_mp3",
        "an mp3 clip replaced by random bytes",
        _clip_case(lambda f: corrupt(f.clip("train", 0)), "corrupt_audio"),
    ),
    Case(
        "truncated_mp3",
        "an mp3 cut at 40% (--check-audio decodes it)",
        _clip_case(_truncated_mp3, "corrupt_audio", "--check-audio", mention="truncated"),
    ),
    Case(
        "truncated_wav",
        "a WAV cut in half: its header declares twice the data",
        _clip_case(_truncated_wav, "corrupt_audio", "--check-audio", mention="cut.wav"),
    ),
    Case(
        "zero_byte_clip",
        "a clip of 0 bytes",
        _clip_case(lambda f: f.clip("train", 0).write_bytes(b""), "empty_audio"),
    ),
    Case(
        "missing_clip",
        "a TSV row whose clip does not exist",
        _clip_case(lambda f: f.clip("train", 0).unlink(), "missing_audio"),
    ),
    Case(
        "clip_is_directory",
        "a directory where the clip should be",
        _clip_case(_clip_is_dir, "missing_audio", mention="is a directory"),
    ),
    Case(
        "stereo",
        "a stereo 48 kHz mp3 (kept, averaged to mono)",
        _ok_clip("stereo.mp3", 0.5, lambda p: write_mp3(p, 0.5, channels=2)),
    ),
    Case(
        "rate_8k",
        "an 8 kHz WAV (kept, resampled to 16 kHz)",
        _ok_clip("r8k.wav", 0.5, lambda p: write_wav(p, 0.5, 8000)),
    ),
    Case(
        "rate_48k",
        "a 48 kHz 24-bit FLAC (kept, resampled to 16 kHz)",
        _ok_clip("r48k.flac", 0.5, lambda p: write_wav(p, 0.5, 48000, 1, "PCM_24")),
    ),
    Case(
        "thirty_minutes",
        "one clip of 30 minutes (sparse 8 kHz WAV)",
        _clip_case(
            lambda f: write_sparse_wav(set_clip(f, 0, "long.wav"), 1800.0),
            "audio_too_long",
            mention="1800.0 s long",
        ),
    ),
    Case(
        "silence",
        "a clip of digital silence (--check-audio)",
        _clip_case(
            lambda f: write_mp3(f.clip("train", 0), 0.5, silent=True),
            "silent_audio",
            "--check-audio",
        ),
    ),
    Case(
        "nan_samples",
        "NaN samples in a float WAV (--check-audio)",
        _clip_case(_nan_wav, "corrupt_audio", "--check-audio", mention="NaN"),
    ),
]


# --- cases: TSVs and transcripts -----------------------------------------------------------------


def _tsv_error(
    mutate: Callable[[CvFolder], Path], mention: str, *flags: str
) -> Callable[[Path], Setup]:
    """The re-import must fail naming ``<tsv><mention>`` and leave OUT as it was."""

    def build(tmp: Path) -> Setup:
        folder, out, argv = cv_out(tmp)
        tsv = mutate(folder)
        return Setup([*argv, *flags], "error", (f"{tsv}{mention}",), out=out)

    return build


def _not_utf8(folder: CvFolder) -> Path:
    tsv = folder.tsv("train")
    lines = tsv.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"sentence", "séntence".encode("latin-1"))
    tsv.write_bytes(b"\n".join(lines))
    return tsv


def _missing_column(folder: CvFolder) -> Path:
    cols = [c for c in CV_COLUMNS if c != "sentence"]
    rows = ([r[c] for c in cols] for r in folder.rows["train"])
    return write_raw_tsv(folder.tsv("train"), cols, rows)


def _extra_tab(folder: CvFolder) -> Path:
    folder.rows["train"][0]["sentence"] = "two\tfields"
    folder.write_tsvs()
    return folder.tsv("train")


def _set_sentence(text: str) -> Callable[[CvFolder], None]:
    def mutate(folder: CvFolder) -> None:
        folder.rows["train"][0]["sentence"] = text
        folder.write_tsvs()

    return mutate


def _zero_byte_tsv(folder: CvFolder) -> Path:
    folder.tsv("dev").write_bytes(b"")
    return folder.tsv("dev")


TSV_CASES = [
    Case("tsv_not_utf8", "train.tsv with a Latin-1 byte on line 3", _tsv_error(_not_utf8, ":3")),
    Case(
        "tsv_missing_column",
        "train.tsv without the sentence column",
        _tsv_error(_missing_column, ":1"),
    ),
    Case(
        "tsv_extra_tab",
        "a train.tsv row with an extra tab (counted)",
        _clip_case(_extra_tab, "malformed_row"),
    ),
    Case(
        "tsv_extra_tab_strict",
        "the same with --strict (first bad row is an error)",
        _tsv_error(_extra_tab, ":2", "--strict"),
    ),
    Case("tsv_zero_byte", "dev.tsv of 0 bytes", _tsv_error(_zero_byte_tsv, "")),
    Case(
        "empty_transcript",
        "a row with an empty sentence",
        _clip_case(_set_sentence(""), "empty_transcript"),
    ),
    Case(
        "empty_transcript_strict",
        "the same with --strict",
        _tsv_error(lambda f: (_set_sentence("")(f), f.tsv("train"))[1], ":2", "--strict"),
    ),
    Case(
        "transcript_10k_chars",
        "a sentence of 10,000 characters",
        _clip_case(_set_sentence("a" * 10_000), "text_too_long", mention="10000 characters"),
    ),
]


# --- cases: language codes -----------------------------------------------------------------------


def _cv_language(tmp: Path) -> Setup:
    folder, out, argv = cv_out(tmp)
    return Setup([*argv, "--language", "xx_YY"], "error", (str(folder.lang_dir), "xx_YY"), out=out)


def _covost_out(tmp: Path) -> tuple[Path, Path, Path, list[str]]:
    fx = make_covost(tmp / "covost", langs=("fr",), n=4)
    out = tmp / "out"
    argv = ["prepare", "covost2", str(fx.covost_dir), str(fx.cv_root), "--out", str(out), *PREP]
    must_succeed(argv)
    return fx.covost_dir, fx.cv_root, out, argv


def _covost_language_arg(tmp: Path) -> Setup:
    covost, _, out, argv = _covost_out(tmp)
    return Setup([*argv, "--languages", "xx"], "error", (str(covost), "xx"), out=out)


def _covost_language_file(tmp: Path) -> Setup:
    covost, _, out, argv = _covost_out(tmp)
    bad = covost / "covost_v2.xx_en.tsv"
    shutil.copy(covost / "covost_v2.fr_en.tsv", bad)
    return Setup(argv, "skip", (str(bad),), "unknown_language", out)


LANGUAGE_CASES = [
    Case("language_code_cli", "prepare commonvoice --language xx_YY", _cv_language),
    Case("language_code_covost", "prepare covost2 --languages xx", _covost_language_arg),
    Case(
        "language_code_in_file_name",
        "covost_v2.xx_en.tsv beside a good one (counted)",
        _covost_language_file,
    ),
]


# --- cases: manifests (samu-st data stats) ---------------------------------------------------


GOOD = {
    "id": "u1",
    "audio": "a.wav",
    "duration": 1.0,
    "language": "fr",
    "source_text": "un",
    "target_text": "one",
    "speaker": "s",
    "split": "train",
}


def _manifest(lines: list[str], mention: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        path = tmp / "m.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return Setup(["data", "stats", str(path)], "error", (f"{path}{mention}",), out=tmp)

    return build


def _line(**changes: object) -> str:
    return json.dumps({**GOOD, "id": "u2", **changes})


def _manifest_path(kind: str) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        path = tmp / "m.jsonl"
        if kind == "dir":
            path.mkdir()
        elif kind == "empty":
            path.write_bytes(b"")
        return Setup(["data", "stats", str(path)], "error", (str(path),), out=tmp)

    return build


MANIFEST_CASES = [
    Case(
        "manifest_not_json",
        "line 2 of a manifest is not JSON",
        _manifest([json.dumps(GOOD), '{"id": "u2", oops'], ":2"),
    ),
    Case(
        "manifest_bad_language",
        "a manifest line with language 'French'",
        _manifest([json.dumps(GOOD), _line(language="French")], ":2"),
    ),
    Case(
        "manifest_nan_duration",
        "a manifest line with duration NaN",
        _manifest([json.dumps(GOOD), _line(duration=math.nan)], ":2"),
    ),
    Case("manifest_missing", "data stats on a missing manifest", _manifest_path("missing")),
    Case("manifest_is_directory", "data stats on a directory", _manifest_path("dir")),
    Case(
        "manifest_zero_byte",
        "data stats on a manifest of 0 bytes",
        _manifest_path("empty"),
    ),
]


# --- cases: configs (model-summary, prepare mini --config) ---------------------------------------


def _config(
    text: str | bytes, mentions: tuple[str, ...], cmd: str = "model-summary"
) -> Callable[[Path], Setup]:
    def build(tmp: Path) -> Setup:
        path = tmp / "cfg.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        argv = ["model-summary", str(path)]
        if cmd == "mini":
            argv = ["prepare", "mini", "--out", str(tmp / "mini"), "--config", str(path)]
        return Setup(argv, "error", (str(path), *mentions), out=tmp)

    return build


def _config_dir(tmp: Path) -> Setup:
    (tmp / "cfg.yaml").mkdir()
    return Setup(["model-summary", str(tmp / "cfg.yaml")], "error", (str(tmp / "cfg.yaml"),))


CONFIG_CASES = [
    Case(
        "config_unknown_key",
        "model: {encodr: ...} (a typo)",
        _config("model:\n  encodr: {size: tiny}\n", ("encodr",)),
    ),
    Case(
        "config_wrong_type",
        "model.length_adaptor_layers: two",
        _config("model:\n  length_adaptor_layers: two\n", ("length_adaptor_layers",)),
    ),
    Case(
        "config_bad_yaml",
        "a tab indenting line 3 (YAML syntax error)",
        _config("model:\n  encoder:\n\t size: tiny\n  decoder: {}\n", (":3", "invalid YAML")),
    ),
    Case(
        "config_not_utf8",
        "a config in Latin-1",
        _config("model: {}\n# café\n".encode("latin-1"), ("UTF-8",)),
    ),
    Case(
        "config_unknown_key_mini",
        "prepare mini --config with an unknown key",
        _config("seed: 1\nlanguagez: [fr]\n", ("languagez",), cmd="mini"),
    ),
    Case(
        "config_unknown_language_mini",
        "prepare mini --config with languages: [xx]",
        _config("languages: [fr, xx]\n", ("xx",), cmd="mini"),
    ),
    Case(
        "config_is_directory",
        "model-summary on a directory",
        _config_dir,
    ),
]


# --- cases: whole-run failures -------------------------------------------------------------------


def _all_clips_missing(tmp: Path) -> Setup:
    folder, out, argv = cv_out(tmp)
    shutil.rmtree(folder.clips)
    folder.clips.mkdir()
    return Setup(argv, "error", ("no utterance could be imported",), out=out)


def _hf_not_a_dataset(tmp: Path) -> Setup:
    folder, out, _ = cv_out(tmp)
    argv = ["prepare", "hf-disk", str(folder.lang_dir), "--language", "ga-IE", "--out", str(out)]
    return Setup(argv, "error", (str(folder.lang_dir), "save_to_disk"), out=out)


RUN_CASES = [
    Case(
        "reimport_nothing_kept",
        "re-import into a good OUT when every clip is missing",
        _all_clips_missing,
    ),
    Case("hf_disk_not_a_dataset", "prepare hf-disk on a plain folder", _hf_not_a_dataset),
]

# --- cases: step commands (config and data errors of a training run) ---------------------------


def step_corpus(tmp: Path, bad_clip: bool = False) -> Path:
    """A manifest of three 0.6 s clips (the first one NaN-filled with ``bad_clip``)."""
    from samu_st.data.manifest import Utterance, write_manifest

    utts = []
    for i, (src, tgt) in enumerate([("un", "one"), ("deux", "two"), ("trois", "three")]):
        wav = tmp / "clips" / f"c{i}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        x = tone(0.6, 16000)
        if bad_clip and i == 0:
            x[:] = np.nan
        sf.write(wav, x, 16000, subtype="FLOAT")
        utts.append(Utterance(f"c{i}", str(wav), 0.6, "fr", src, tgt, "s", "train"))
    write_manifest(tmp / "train.jsonl", utts)
    return tmp / "train.jsonl"


def _step(
    command: str,
    section: str,
    extra: str,
    mentions: tuple[str, ...],
    bad_clip: bool = False,
    bad_line: str | None = None,
    expect: Outcome = "error",
) -> Callable[[Path], Setup]:
    """``samu-st COMMAND cfg.yaml`` with a tiny ``section`` plus the YAML lines ``extra``;
    ``bad_line`` is appended to the manifest, which is then called bad.jsonl."""

    def build(tmp: Path) -> Setup:
        manifest = step_corpus(tmp, bad_clip)
        if bad_line is not None:
            lines = [*manifest.read_text(encoding="utf-8").splitlines()[:1], bad_line]
            manifest = tmp / "bad.jsonl"
            manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
        head = (
            f"{section}:\n  out_dir: {tmp / 'run'}\n"
            f"  data: {{manifests: [{manifest}], max_duration: 1.0}}\n"
            "  train: {max_steps: 4, tensorboard: false, progress_bar: false}\n"
        )
        config = tmp / "cfg.yaml"
        config.write_text(head + extra, encoding="utf-8")
        found = tuple(m.replace("{tmp}", str(tmp)) for m in mentions)
        return Setup([command, str(config)], expect, found, out=tmp)

    return build


TINY = "  encoder: {size: tiny}\n"
STEP_CASES = [
    Case(
        "step_config_unknown_key",
        "distill config with `encodr:` (a typo)",
        _step("distill", "distill", "  encodr: {size: tiny}\n", ("{tmp}/cfg.yaml", "encodr")),
    ),
    Case(
        "step_config_wrong_type",
        "train-ctc config with normalizer: 5 (not a string)",
        _step(
            "train-ctc",
            "train_ctc",
            TINY + "  normalizer: 5\n",
            ("{tmp}/cfg.yaml", "normalizer"),
        ),
    ),
    Case(
        "step_config_bad_value",
        "pretrain config with encoder.mode: adapters (refused by the step)",
        _step(
            "pretrain",
            "pretrain",
            "  encoder: {size: tiny, mode: adapters}\n",
            ("{tmp}/cfg.yaml", "mode"),
        ),
    ),
    Case(
        "step_bad_manifest",
        "train-ctc on a manifest whose line 2 is not JSON",
        _step(
            "train-ctc",
            "train_ctc",
            TINY,
            ("{tmp}/bad.jsonl:2", "not valid JSON"),
            bad_line='{"id": "c1", oops',
        ),
    ),
    Case(
        "step_hub_id",
        "pretrain with encoder.pretrained: facebook/wav2vec2-xls-r-300m (offline)",
        _step(
            "pretrain",
            "pretrain",
            "  encoder: {pretrained: facebook/wav2vec2-xls-r-300m}\n",
            ("facebook/wav2vec2-xls-r-300m", "never downloads"),
        ),
    ),
    Case(
        "step_nan_clip",
        "train-ctc on a manifest whose clip has NaN samples (imported without --check-audio): "
        "skipped and counted, the run finishes",
        _step("train-ctc", "train_ctc", TINY, (), bad_clip=True, expect="ok"),
    ),
    Case(
        "step_nan_clip_over_limit",
        "the same with train.max_bad_clips: 0 (no unreadable clip tolerated)",
        _step(
            "train-ctc",
            "train_ctc",
            TINY + "  train: {max_steps: 4, tensorboard: false, progress_bar: false, "
            "max_bad_clips: 0}\n",
            ("{tmp}/clips/c0.wav", "NaN", "max_bad_clips"),
            bad_clip=True,
        ),
    ),
]


CASES: list[Case] = [
    *AUDIO_CASES,
    *TSV_CASES,
    *LANGUAGE_CASES,
    *MANIFEST_CASES,
    *CONFIG_CASES,
    *RUN_CASES,
    *STEP_CASES,
]


# --- checking ------------------------------------------------------------------------------------


def snapshot(folder: Path | None) -> dict[str, bytes]:
    if folder is None or not folder.is_dir():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.stat().st_size < 2**20
    }


def _skip_examples(out: Path, reason: str) -> tuple[int, list[str]]:
    report = json.loads((out / "import_report.json").read_text(encoding="utf-8"))
    return report["skipped"].get(reason, 0), report["examples"].get(reason, [])


def _damage(setup: Setup, before: dict[str, bytes], outcome: str) -> Problems:
    """Earlier files intact (error), or earlier manifest lines kept (skip/ok); no temp files."""
    if setup.out is None:
        return []
    problems = [f"half-written file left: {p}" for p in setup.out.rglob(".*.tmp*")]
    after = snapshot(setup.out)
    for name, data in before.items():
        if outcome == "error" and after.get(name) != data:
            problems.append(f"earlier file {name} {'changed' if name in after else 'deleted'}")
        elif name.endswith(".jsonl") and outcome != "error":
            old, new = data.decode().splitlines(), manifest_lines(setup.out / name)
            lost = [ln for ln in old if ln not in new]  # the changed clip's line may go
            if len(lost) > 1:
                problems.append(f"earlier manifest {name} lost {len(lost)} lines: {lost[:2]}")
    return problems


def check(setup: Setup, run: Run, before: dict[str, bytes]) -> Result:
    outcome = "TRACEBACK" if run.traceback else ("error" if run.code != 0 else "ok")
    message = run.error_line or (run.stdout.strip().splitlines() or [""])[0]
    problems: Problems = []
    if run.traceback:
        problems.append("traceback: " + run.traceback.strip().splitlines()[-1])
    elif setup.expect == "error":
        if run.code == 0:
            problems.append("exit code 0 for bad input")
        elif not run.error_line:
            problems.append("no 'samu-st: error:' line on stderr")
    elif run.code != 0:
        problems.append(f"exit code {run.code}: {run.error_line or run.stderr[-300:]}")
    if setup.reason and outcome == "ok" and setup.out is not None:
        count, examples = _skip_examples(setup.out, setup.reason)
        if count:
            outcome, message = "skip", (examples or [""])[0]
        else:
            problems.append(f"no {setup.reason} skip counted in import_report.json")
    if outcome != setup.expect and not problems:
        problems.append(f"expected {setup.expect}, got {outcome}")
    missing = [m for m in setup.mentions if m not in message]
    if missing and outcome in ("error", "skip"):
        problems.append(f"message does not mention {missing}")
    if not run.traceback:
        problems += _damage(setup, before, outcome)
        problems += setup.verify() if setup.verify and outcome == setup.expect else []
    return Result("", outcome, run.code, message, problems)


def run_case(case: Case, workdir: Path, subprocess_mode: bool = False) -> Result:
    """Build ``case`` in ``workdir`` (an empty folder), run it, check it."""
    setup = case.build(workdir)
    before = snapshot(setup.out)
    result = check(setup, run_cli(setup.argv, subprocess_mode), before)
    result.case = case.name
    result.message = result.message.replace(f"{workdir}{os.sep}", "")  # shorter table rows
    return result


def table(results: Sequence[Result], cases: Sequence[Case]) -> str:
    bugs = {c.name for c in cases if c.bug}
    rows = ["case | outcome | message", "--- | --- | ---"]
    for r in results:
        status = r.outcome
        if r.problems:
            status += " (KNOWN BUG)" if r.case in bugs else " (UNEXPECTED)"
        elif r.case in bugs:
            status += " (bug fixed? remove the mark)"
        msg = r.message.replace("|", "/")
        msg = msg if len(msg) <= 140 else msg[:137] + "..."
        rows.append(f"{r.case} | {status} | {msg}")
        rows += [f"  ! {p}" for p in r.problems]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("cases", nargs="*", help="case names (default: all)")
    p.add_argument("--subprocess", action="store_true", help="run `python -m samu_st` per case")
    p.add_argument("--keep", type=Path, default=None, help="keep the case folders here")
    args = p.parse_args(argv)
    chosen = [c for c in CASES if not args.cases or c.name in args.cases]
    root = Path(args.keep or tempfile.mkdtemp(prefix="samu-battery-"))
    results = []
    try:
        for case in chosen:
            (root / case.name).mkdir(parents=True, exist_ok=True)
            results.append(run_case(case, root / case.name, args.subprocess))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results, chosen))
    bugs = {c.name for c in chosen if c.bug}
    unexpected = [r.case for r in results if bool(r.problems) != (r.case in bugs)]
    print(f"\n{len(results)} cases, {len(bugs)} known bugs, {len(unexpected)} unexpected")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
