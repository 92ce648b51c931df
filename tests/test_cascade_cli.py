"""`samu-st cascade translate | evaluate` (issue 17): the cascade baseline (CTC ASR → MBART text
MT) from the command line, through the library functions the pipeline uses, with the same
results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import test_cascade
from samu_st import cascade
from samu_st.cascade import run_cascade
from samu_st.cli import main
from samu_st.decoding.translate import DecodeOptions
from samu_st.evaluate import EvalOptions, eval_manifests, utterances_from_inputs
from samu_st.grid import SYSTEMS
from samu_st.pipeline import Context, CorpusConfig, PipelineConfig
from samu_st.pipeline_stages import make_stage_eval
from samu_st.report import AsrResults, TranslationResults, load_results

# the tiny corpus, CTC model and MT model of the cascade's library tests
corpus, ctc_dir, mt_dir = test_cascade.corpus, test_cascade.ctc_dir, test_cascade.mt_dir
pytestmark = pytest.mark.usefixtures("one_thread_module")


def _clips(corpus: Path, lang: str, n: int) -> list[str]:
    return [u.audio for u in eval_manifests(corpus, "test", [lang], n)]


def test_translate_prints_one_line_per_file(
    corpus: Path,
    ctc_dir: Path,
    mt_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clips = _clips(corpus, "fr", 3)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all" * 50)
    models = ["--asr", str(ctc_dir), "--mt", str(mt_dir)]
    argv = ["cascade", "translate", *models, "--beam", "2"]
    assert main([*argv, *clips, "--language", "fr_XX", "--format", "jsonl"]) == 0  # MBART-50's
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == clips and all(set(r) == {"id", "hypothesis"} for r in rows)
    utts, _ = utterances_from_inputs(clips, "fr", need_language=True)
    run = run_cascade(ctc_dir, mt_dir, utts, EvalOptions(decode=DecodeOptions(num_beams=2)))
    assert [r["hypothesis"] for r in rows] == [o.translation for o in run.outputs]

    assert main([*argv, *clips, str(broken), "--language", "fr", "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "id\thypothesis" and [x.split("\t")[0] for x in lines[1:]] == clips
    assert "skipped 1 unreadable clip(s)" in err and str(broken) in err


def test_unknown_language_is_a_usage_error_listing_the_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (
        ["translate", "--asr", "a", "--mt", "m", "x.wav", "--language", "xx"],
        ["evaluate", "--asr", "a", "--mt", "m", "--manifests", "c", "--out", "o",
         "--languages", "fr", "xx"],
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["cascade", *command])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "usage:" in err and "unknown source language 'xx'" in err
        assert "sv-SE" in err and "zh-CN" in err and "fr_XX" in err  # the valid codes


def test_evaluate_writes_what_the_pipeline_stage_writes(
    corpus: Path,
    ctc_dir: Path,
    mt_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tiny CTC model's transcripts are noise (the MT says "two" to all): this ASR reads the
    # gold transcripts, so the translations compared below differ from one clip to the next.
    gold = {u.id: u.source_text for u in eval_manifests(corpus, "test")}
    monkeypatch.setattr(cascade, "CtcTranscriber", lambda *a, **k: test_cascade.StubCtc(gold))
    out = tmp_path / "cli"
    models = ["--asr", str(ctc_dir), "--mt", str(mt_dir)]
    argv = ["cascade", "evaluate", *models, "--manifests", str(corpus), "--out", str(out)]
    assert main([*argv, "--beam", "2", "--max-utterances", "2"]) == 0
    printed = capsys.readouterr().out
    assert "sacrebleu signature" in printed and "(ASR)" in printed and str(out) in printed
    results = load_results(out / "results.json")
    assert isinstance(results, TranslationResults) and results.model == "cascade"
    assert results.n_utterances == {"fr": 2, "de": 2}
    rows = [json.loads(line) for line in (out / "hypotheses.jsonl").open()]
    assert any(r["hypothesis"] == r["reference"] for r in rows), rows
    assert len({r["hypothesis"] for r in rows}) > 1, rows
    data = json.loads((out / "results.json").read_text())
    assert set(data["bleu"]) == {"per_language", "high", "mid", "low", "trfgap"}
    assert set(data["bleu"]["per_language"]) == {"fr", "de"}
    asr = load_results(out / "asr" / "results.json")
    assert isinstance(asr, AsrResults) and set(asr.wer.per_language) == set(asr.cer.per_language)
    assert set(asr.cer.per_language) == {"fr", "de"}

    # the pipeline's cascade evaluation, same models, manifests and beam
    cfg = PipelineConfig(
        out_dir=str(tmp_path / "grid"),
        corpus=CorpusConfig(kind="manifests", path=str(corpus)),
        beam=2,
        max_eval_utterances=2,
    )
    ctx = Context(cfg, tmp_path / "grid", {"ctc": ctc_dir, "mt": mt_dir})
    staged = load_results(make_stage_eval(SYSTEMS["cascade"])(ctx))
    assert isinstance(staged, TranslationResults)
    assert staged.bleu == results.bleu and staged.n_utterances == results.n_utterances
    assert staged.sacrebleu_signature == results.sacrebleu_signature
    stage_dir = ctx.out("eval:cascade")
    for name in ("hypotheses.jsonl", "asr/results.json"):
        assert (stage_dir / name).read_text() == (out / name).read_text(), name


def test_several_manifest_folders_are_read_one_after_the_other(corpus: Path) -> None:
    opts = EvalOptions(languages=("de",), max_utterances=2)  # per folder
    utts = cascade.cascade_manifests([corpus, str(corpus)], opts)
    assert [u.id for u in utts] == [u.id for u in eval_manifests(corpus, "test", ["de"], 2)] * 2
    assert cascade.cascade_manifests(corpus, opts) == utts[:2]
