"""Batched decoding, `evaluate`, `translate` and `transcribe` on tiny random models."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from num2words import num2words
from transformers import SpeechEncoderDecoderModel, Wav2Vec2CTCTokenizer

from fixtures_corpora import TINY_TRANSLATOR, number_tokenizer, random_translator
from samu_st.cli import main
from samu_st.data.dataset import SpeechDataset
from samu_st.data.manifest import Utterance, write_manifest
from samu_st.decoding.ngram import build_arpa
from samu_st.decoding.translate import DecodeOptions, generate_batch, translate_utterances
from samu_st.errors import AudioError, ModelLoadError
from samu_st.evaluate import model_kind
from samu_st.models.ctc import build_ctc_model, save_ctc_model
from samu_st.models.encoder import EncoderConfig
from samu_st.models.tokenizer import TargetTokenizer
from samu_st.models.translator import save_translator
from samu_st.report import AsrResults, TranslationResults

TINY = TINY_TRANSLATOR
LANGS = ("fr", "de", "ja", "cy")
SECONDS = (0.42, 0.9, 0.31, 0.66, 0.55, 0.8, 0.37)
MAX_NEW = 6
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer() -> TargetTokenizer:
    return number_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: TargetTokenizer) -> SpeechEncoderDecoderModel:
    # Larger weights and non-identity adapters make every comparison below compare different
    # outputs (see random_translator).
    return random_translator(tokenizer)


def _clip(path: Path, seconds: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    wav = 0.2 * np.sin(2 * np.pi * (150 + 90 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), 16000)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest folder: test/<lang>.jsonl with short synthetic clips (relative paths)."""
    root = tmp_path_factory.mktemp("corpus")
    for li, lang in enumerate(LANGS[:2]):
        utts = []
        for i, seconds in enumerate(SECONDS):
            _clip(root / "audio" / f"{lang}{i}.wav", seconds, seed=li * 10 + i)
            utts.append(
                Utterance(
                    f"{lang}-{i}",
                    f"../audio/{lang}{i}.wav",
                    seconds,
                    lang,
                    f"{i} src",
                    num2words(i + 3 * li),
                    f"spk{i % 2}",
                    "test",
                )
            )
        write_manifest(root / "test" / f"{lang}.jsonl", utts)
    return root


def _utterances(corpus: Path) -> list[Utterance]:
    from samu_st.evaluate import eval_manifests

    utts = eval_manifests(corpus, "test")
    # mix languages and lengths, so that input order differs from length order
    return [
        Utterance(u.id, u.audio, u.duration, LANGS[i % 4], "", u.target_text, "", "test")
        for i, u in enumerate(utts)
    ]


def _greedy(model: SpeechEncoderDecoderModel, tok: TargetTokenizer, wav: np.ndarray, lang: str):  # type: ignore[no-untyped-def]
    ids = [tok.decoder_start_id, tok.lang_token_id(lang)]
    audio = torch.from_numpy(wav)[None]
    with torch.no_grad():
        for _ in range(MAX_NEW):
            logits = model(inputs=audio, decoder_input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == tok.eos_id:
                break
    return tok.decode(ids)


def test_beam_one_is_greedy_and_order_is_kept(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer, corpus: Path
) -> None:
    utts = _utterances(corpus)
    opts = DecodeOptions(num_beams=1, max_new_tokens=MAX_NEW, max_duration=2.0)
    decoded = translate_utterances(model, tokenizer, utts, opts)
    dataset = SpeechDataset(utts, None)
    expected = [
        _greedy(model, tokenizer, dataset[i]["wav"], u.language) for i, u in enumerate(utts)
    ]
    assert decoded.hypotheses == expected
    assert len(set(expected)) > 3, expected  # the random model does not say one thing
    assert decoded.skipped == []


def test_batched_equals_one_by_one(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer, corpus: Path
) -> None:
    utts = _utterances(corpus)
    for beams in (1, 3):
        batched = translate_utterances(
            model, tokenizer, utts, DecodeOptions(beams, max_new_tokens=MAX_NEW, max_duration=60)
        ).hypotheses
        single = translate_utterances(
            model, tokenizer, utts, DecodeOptions(beams, max_new_tokens=MAX_NEW, max_batch_size=1)
        ).hypotheses
        assert batched == single
        dataset = SpeechDataset(utts, None)
        wav = torch.from_numpy(dataset[5]["wav"])
        alone = generate_batch(
            model,
            tokenizer,
            wav[None],
            torch.tensor([wav.numel()]),
            [utts[5].language],
            num_beams=beams,
            max_new_tokens=MAX_NEW,
        )
        assert batched[5] == alone[0]


def test_bad_audio_error_or_counted_skip(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer, corpus: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk" * 20)
    utts = _utterances(corpus)[:3]
    utts.insert(1, Utterance("bad", str(bad), 0.5, "fr", "", "x", "", "test"))
    opts = DecodeOptions(num_beams=1, max_new_tokens=MAX_NEW)
    with pytest.raises(AudioError, match=r"broken\.wav"):
        translate_utterances(model, tokenizer, utts, opts)
    decoded = translate_utterances(model, tokenizer, utts, opts, skip_bad=True)
    assert decoded.hypotheses[1] is None
    assert all(isinstance(h, str) for i, h in enumerate(decoded.hypotheses) if i != 1)
    assert [s.id for s in decoded.skipped] == ["bad"] and "broken.wav" in decoded.skipped[0].reason


@pytest.fixture(scope="module")
def model_dir(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    return save_translator(tmp_path_factory.mktemp("m") / "st" / "final", model, tokenizer, TINY)


def test_evaluate_translator_writes_results(model_dir: Path, corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", str(model_dir), str(corpus), "--out", str(out), "--beam", "2"]
    assert main([*argv, "--max-utterances", "5", "--max-new-tokens", str(MAX_NEW)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert set(data) == {"model", "bleu", "sacrebleu_signature", "n_utterances"}
    assert data["model"] == "st"  # a run's final/ folder is named after the run
    assert set(data["bleu"]) == {"per_language", "high", "mid", "low", "trfgap"}
    assert set(data["bleu"]["per_language"]) == {"fr", "de"} and data["bleu"]["low"] is None
    assert data["n_utterances"] == {"fr": 5, "de": 5}
    assert "tok:13a" in data["sacrebleu_signature"]
    TranslationResults.from_json(out / "results.json")
    assert {"results.md", "groups.png", "hypotheses.jsonl"} <= {p.name for p in out.iterdir()}
    rows = [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and set(rows[0]) == {"id", "language", "hypothesis", "reference"}
    by_id = {row["id"]: row for row in rows}
    assert by_id["fr-1"]["reference"] == num2words(1) and by_id["de-1"]["language"] == "de"


def test_evaluate_engines_give_the_same_hypotheses(
    model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """``--engine samu`` (our beam search) and ``--engine generate`` agree word for word."""
    rows = {}
    for engine in ("samu", "generate"):
        out = tmp_path / engine
        argv = ["evaluate", str(model_dir), str(corpus), "--out", str(out), "--beam", "3"]
        argv += ["--max-utterances", "4", "--max-new-tokens", str(MAX_NEW), "--engine", engine]
        assert main(argv) == 0
        rows[engine] = (out / "hypotheses.jsonl").read_text()
    assert rows["samu"] == rows["generate"] and rows["samu"].count("\n") == 8


def test_translate_cli_tsv_and_jsonl(
    model_dir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = corpus / "test" / "fr.jsonl"
    tsv = tmp_path / "out.tsv"
    assert (
        main(
            [
                "translate",
                str(model_dir),
                str(manifest),
                "--out",
                str(tsv),
                "--beam",
                "1",
                "--max-new-tokens",
                str(MAX_NEW),
            ]
        )
        == 0
    )
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["id", "hypothesis", "reference"]
    assert [line.split("\t")[0] for line in lines[1:]] == [f"fr-{i}" for i in range(7)]
    assert lines[1].split("\t")[2] == num2words(0)
    clip = corpus / "audio" / "de3.wav"
    assert main(["translate", str(model_dir), str(clip)]) == 2
    assert "needs --language" in capsys.readouterr().err
    assert (
        main(
            [
                "translate",
                str(model_dir),
                str(clip),
                "--language",
                "de",
                "--format",
                "jsonl",
                "--max-new-tokens",
                str(MAX_NEW),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert set(row) == {"id", "hypothesis"} and row["id"] == str(clip)


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ctc")
    vocab = {"[PAD]": 0, "[UNK]": 1, "|": 2, **{c: i + 3 for i, c in enumerate("0123456789src")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(folder / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]", word_delimiter_token="|"
    )
    torch.manual_seed(1)
    model = build_ctc_model(EncoderConfig(size="tiny"), len(tokenizer), tokenizer.pad_token_id)
    save_ctc_model(model.eval(), folder / "asr", tokenizer)
    return folder / "asr"


def test_transcribe_and_evaluate_ctc(ctc_dir: Path, corpus: Path, tmp_path: Path) -> None:
    assert model_kind(ctc_dir) == "ctc"
    out = tmp_path / "t.jsonl"
    manifest = corpus / "test" / "de.jsonl"
    assert (
        main(["transcribe", str(ctc_dir), str(manifest), "--format", "jsonl", "--out", str(out)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and set(rows[0]) == {"id", "hypothesis", "reference"}
    assert rows[2]["reference"] == "2 src"
    assert (
        main(
            [
                "transcribe",
                str(ctc_dir),
                str(manifest),
                "--batch-size",
                "1",
                "--out",
                str(tmp_path / "one.jsonl"),
                "--format",
                "jsonl",
            ]
        )
        == 0
    )
    assert (tmp_path / "one.jsonl").read_text() == out.read_text()  # batching changes nothing
    if importlib.util.find_spec("pyctcdecode") and importlib.util.find_spec("kenlm"):
        arpa = tmp_path / "lm.arpa"
        arpa.write_text(build_arpa([["1", "src"], ["2", "src"], ["12", "src"]], order=2))
        lm_out = tmp_path / "lm.tsv"
        assert (
            main(
                ["transcribe", str(ctc_dir), str(manifest), "--lm", str(arpa), "--out", str(lm_out)]
            )
            == 0
        )
        assert len(lm_out.read_text().splitlines()) == 8  # header + 7 rows
    eval_dir = tmp_path / "asr-eval"
    assert main(["evaluate", str(ctc_dir), str(corpus), "--out", str(eval_dir)]) == 0
    results = AsrResults.from_json(eval_dir / "results.json")
    assert results.normalizer == "generic" and results.n_utterances == {"fr": 7, "de": 7}
    assert results.cer.per_language["fr"] >= 0.0 and results.wer.per_language["de"] >= 0.5


def test_model_kind_errors(model_dir: Path, ctc_dir: Path, tmp_path: Path) -> None:
    assert model_kind(model_dir) == "translator"
    with pytest.raises(ModelLoadError, match="neither a speech translator"):
        model_kind(tmp_path)
    assert main(["transcribe", str(model_dir), "x.wav"]) == 2
    assert main(["translate", str(ctc_dir), "x.wav", "--language", "fr"]) == 2


def test_translate_cli_language_accepts_mbart50_codes_and_rejects_unknown_ones(
    model_dir: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = corpus / "audio" / "fr1.wav"
    outputs = {}
    for code in ("fr", "fr_XX", "zh-CN", "zh_CN", "sv_SE"):
        argv = ["translate", str(model_dir), str(clip), "--language", code, "--format", "jsonl"]
        assert main([*argv, "--max-new-tokens", str(MAX_NEW)]) == 0, code
        outputs[code] = json.loads(capsys.readouterr().out)["hypothesis"]
    assert outputs["fr_XX"] == outputs["fr"] and outputs["zh_CN"] == outputs["zh-CN"]
    for code in ("fr_FR", "xx", "hi_IN"):  # hi_IN: an MBART-50 code but no CoVoST-2 task
        with pytest.raises(SystemExit) as exit_info:
            main(["translate", str(model_dir), str(clip), "--language", code])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "usage:" in err and f"unknown source language {code!r}" in err
        assert "sv-SE" in err and "zh-CN" in err and "fr_XX" in err  # the valid codes
