"""Hugging Face export: plain transformers loads -F folders (and pipeline() translates with
them), -A folders load after `import samu_st` and are refused without it, the model card, and
the SpeechTranslator API."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from transformers import SpeechEncoderDecoderModel, pipeline

import samu_st
from fixtures_corpora import TINY_TRANSLATOR, number_tokenizer, random_translator
from samu_st.audio import load_audio
from samu_st.cli import main
from samu_st.decoding.translate import DecodeOptions
from samu_st.export import ExportOptions, export_translator
from samu_st.export.folder import LANGUAGE_KEY, PREFIXES_KEY
from samu_st.models.encoder import EncoderConfig
from samu_st.models.tokenizer import TargetTokenizer
from samu_st.models.translator import (
    TranslatorConfig,
    build_translator,
    load_translator,
    save_translator,
)

GREEDY = DecodeOptions(num_beams=1, max_new_tokens=12)


@pytest.fixture(scope="module")
def tokenizer() -> TargetTokenizer:
    return number_tokenizer()


def _full_translator(tokenizer: TargetTokenizer) -> tuple[torch.nn.Module, TranslatorConfig]:
    cfg = dataclasses.replace(TINY_TRANSLATOR, encoder=EncoderConfig(size="tiny", mode="full"))
    torch.manual_seed(0)
    model = build_translator(cfg, tokenizer).eval()
    with torch.no_grad():  # outputs that depend on the audio (see random_translator)
        for name, p in model.named_parameters():
            if name.startswith(("decoder.", "enc_to_dec_proj.")) and p.dim() == 2:
                torch.nn.init.normal_(p, std=1.0)
    return model, cfg


def _final(root: Path, tokenizer: TargetTokenizer, mode: str) -> Path:
    if mode == "full":
        model, cfg = _full_translator(tokenizer)
    else:  # non-identity adapters: a dropped adapter would show in the logits
        model, cfg = random_translator(tokenizer), TINY_TRANSLATOR
    return save_translator(root / mode / "final", model, tokenizer, cfg)


@pytest.fixture(scope="module")
def finals(tmp_path_factory: pytest.TempPathFactory, tokenizer: TargetTokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {mode: _final(root, tokenizer, mode) for mode in ("full", "adapters")}


def _logits(model: torch.nn.Module, seed: int = 3) -> torch.Tensor:
    x = torch.randn(1, 12000, generator=torch.Generator().manual_seed(seed))
    dec = torch.tensor([[2, 7, 9, 11]])
    with torch.no_grad():
        return model(input_values=x, decoder_input_ids=dec).logits


def _load_both(final: Path, out: Path) -> tuple[torch.Tensor, torch.Tensor, dict]:
    ours = load_translator(final).model.eval()
    hf, info = SpeechEncoderDecoderModel.from_pretrained(str(out), output_loading_info=True)
    return _logits(ours), _logits(hf.eval()), info


@pytest.mark.parametrize("mode", ["full", "adapters"])
def test_export_loads_with_no_missing_keys_and_equal_logits(
    finals: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    out = export_translator(finals[mode], tmp_path / "hf")
    ours, theirs, info = _load_both(finals[mode], out)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    torch.testing.assert_close(theirs, ours)
    for name in ("preprocessor_config.json", "tokenizer.json", "generation_config.json"):
        assert (out / name).is_file()


def test_an_exported_adapter_model_exports_again(finals: dict[str, Path], tmp_path: Path) -> None:
    """load_translator reads an -A export (its SamuWav2Vec2Config); export takes it too."""
    first = export_translator(finals["adapters"], tmp_path / "hf")
    again = export_translator(first, tmp_path / "hf2")
    ours, theirs, info = _load_both(finals["adapters"], again)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    torch.testing.assert_close(theirs, ours)


def test_adapter_export_is_refused_by_plain_transformers(
    finals: dict[str, Path], tmp_path: Path
) -> None:
    out = export_translator(finals["adapters"], tmp_path / "hf")
    code = (
        "import sys; from transformers import SpeechEncoderDecoderModel\n"
        f"SpeechEncoderDecoderModel.from_pretrained({str(out)!r})\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    assert "requires_import_samu_st" in run.stderr


def test_generation_config_forces_the_prefix_of_the_chosen_language(
    finals: dict[str, Path], tokenizer: TargetTokenizer, tmp_path: Path
) -> None:
    out = export_translator(finals["full"], tmp_path / "hf", ExportOptions(language="fr"))
    gen = json.loads((out / "generation_config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    prefix = tokenizer.prefix_ids("fr", "source")
    assert [gen["decoder_start_token_id"], gen["forced_bos_token_id"]] == prefix
    assert gen[LANGUAGE_KEY] == "fr"
    assert config[PREFIXES_KEY]["de"] == tokenizer.prefix_ids("de", "source")


def _wav(path: Path, seconds: float = 0.8) -> Path:
    wav = np.random.default_rng(5).standard_normal(int(16000 * seconds)).astype(np.float32)
    sf.write(path, 0.1 * wav, 16000)
    return path


@pytest.mark.parametrize("mode", ["full", "adapters"])
def test_pipeline_gives_the_translation_of_ours(
    finals: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    opts = ExportOptions(language="de", num_beams=1, max_new_tokens=GREEDY.max_new_tokens)
    out = export_translator(finals[mode], tmp_path / "hf", opts)
    clip = _wav(tmp_path / "clip.wav")
    ours = samu_st.SpeechTranslator.from_pretrained(finals[mode]).translate([clip], "de", GREEDY)
    asr = pipeline("automatic-speech-recognition", model=str(out))
    theirs = asr({"raw": load_audio(clip), "sampling_rate": 16000})["text"]
    assert ours[0] and theirs.strip() == ours[0]


_PLAIN_PIPELINE = """
import json, sys
import soundfile as sf
{prelude}
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model=sys.argv[1])
texts = []
for path in sys.argv[2:]:
    audio, rate = sf.read(path, dtype="float32")
    texts.append(asr({{"raw": audio, "sampling_rate": rate}})["text"].strip())
print(json.dumps(texts))
"""


@pytest.mark.parametrize("mode", ["full", "adapters"])
def test_pipeline_beam_search_gives_the_hypotheses_of_samu_st_translate(
    finals: dict[str, Path], tmp_path: Path, mode: str
) -> None:
    """The export's default search (5 beams, 200 new tokens) through ``pipeline()`` in a fresh
    process — plain transformers for -F, after ``import samu_st`` for -A — equals
    ``samu-st translate`` with its defaults (5 beams, our beam engine)."""
    out = export_translator(finals[mode], tmp_path / "hf", ExportOptions(language="de"))
    assert json.loads((out / "generation_config.json").read_text())["num_beams"] == 5
    clips = [_wav(tmp_path / f"c{i}.wav", s) for i, s in enumerate((0.5, 0.8, 1.3))]
    mine = tmp_path / "ours.jsonl"
    args = ["translate", str(finals[mode]), *map(str, clips), "--language", "de"]
    assert main([*args, "--format", "jsonl", "--out", str(mine)]) == 0
    ours = {json.loads(line)["id"]: json.loads(line)["hypothesis"] for line in mine.open()}
    prelude = "import samu_st" if mode == "adapters" else ""
    code = _PLAIN_PIPELINE.format(prelude=prelude)
    run = subprocess.run([sys.executable, "-c", code, str(out), *map(str, clips)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(ours) == len(clips) and all(ours.values())
    assert theirs == [ours[_id(ours, clip)] for clip in clips]


def _id(hypotheses: dict[str, str], clip: Path) -> str:
    """The id ``samu-st translate`` gave ``clip`` (the file name without its suffix)."""
    return next(key for key in hypotheses if key in (clip.stem, clip.name, str(clip)))


def test_model_card_lists_bleu_per_language(finals: dict[str, Path], tmp_path: Path) -> None:
    results = {
        "model": "tiny",
        "bleu": {"per_language": {"fr": 12.5, "de": 10.0}, "high": 11.25, "mid": None,
                 "low": None, "trfgap": None},
        "sacrebleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.0",
        "n_utterances": {"fr": 4, "de": 4},
    }  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "hf"
    assert main(["export", str(finals["full"]), "--out", str(out), "--results", str(path)]) == 0
    text = (out / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["pipeline_tag"] == "automatic-speech-recognition"
    assert {"fr", "de", "en"} <= set(meta["language"])
    entries = meta["model-index"][0]["results"]
    values = {m["name"]: m["value"] for e in entries for m in e["metrics"]}
    assert values["BLEU fr-en"] == 12.5 and values["BLEU High"] == 11.25
    assert entries[0]["metrics"][0]["args"] == results["sacrebleu_signature"]
    assert "samu-st export" in text


def test_speech_translator_reads_exported_and_final_folders(
    finals: dict[str, Path], tmp_path: Path
) -> None:
    out = export_translator(finals["adapters"], tmp_path / "hf")
    clips = [_wav(tmp_path / "a.wav", 0.5), _wav(tmp_path / "b.wav", 0.9)]
    a = samu_st.SpeechTranslator.from_pretrained(finals["adapters"]).translate(clips, "fr", GREEDY)
    b = samu_st.SpeechTranslator.from_pretrained(out).translate(clips, "fr_XX", GREEDY)
    assert a == b and len(a) == 2


@pytest.mark.parametrize(
    "order",
    [
        "import samu_st; from transformers import AutoModel",
        "import transformers; import samu_st; from transformers import AutoModel",
        "from transformers import AutoModel; import samu_st",
    ],
)
def test_import_samu_st_leaves_transformers_importable(order: str) -> None:
    # the registration hook once ran while transformers.models.auto was half imported, and
    # `from transformers import AutoModel` then failed for every user of `import samu_st`
    code = f"{order}\nfrom samu_st.export.hf_config import ENCODER_MODEL_TYPE\n"
    code += "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
    code += "assert ENCODER_MODEL_TYPE in CONFIG_MAPPING\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
