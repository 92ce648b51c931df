"""Decoder language conditioning on the MBART-50 many-to-one stand-in (issue 14, defects 4, 5):
the prefix mode is one choice shared by training, both search engines and the saved folder;
the language rows MBART-50 lacks (ca, cy) start apart and train under LNA-D, nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import GenerationConfig, MBartForCausalLM, SpeechEncoderDecoderModel

from samu_st.config import load_yaml
from samu_st.decoding import translate as translate_module
from samu_st.decoding.translate import generate_batch
from samu_st.losses import label_smoothed_nll_loss
from samu_st.models.decoder import DecoderConfig, added_token_rows, lna_d_parameter_count
from samu_st.models.encoder import EncoderConfig, lengths_to_mask
from samu_st.models.summary import summarize_config
from samu_st.models.tokenizer import PrefixMode, TargetTokenizer, make_decoder_targets
from samu_st.models.translator import (
    PREFIX_FILE,
    TranslatorConfig,
    build_translator,
    decoder_prefix_mode,
    load_translator,
    save_translator,
)
from samu_st.steps.train_st import TrainSTConfig
from standins.mbart50 import code_id, write_mbart50

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = torch.tensor([8000, 6000])


@pytest.fixture(scope="module", params=[False, True], ids=["save_pretrained", "legacy"])
def mbart50(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mbart50(tmp_path_factory.mktemp("mbart50") / "m", legacy=request.param)


def _config(folder: Path, prefix: PrefixMode = "source") -> TranslatorConfig:
    return TranslatorConfig(
        encoder=EncoderConfig(size="tiny", mode="adapters"),
        decoder=DecoderConfig(pretrained=str(folder), trainable="lna", prefix=prefix),
        length_adaptor_layers=1,
    )


def _audio() -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.randn(
        len(SAMPLES), int(SAMPLES.max()), generator=torch.Generator().manual_seed(3)
    )
    mask = lengths_to_mask(SAMPLES, audio.shape[1])
    return audio * mask, mask.long()


def test_prefix_of_each_mode(mbart50: Path) -> None:
    tok = TargetTokenizer.load(mbart50)
    fr, en = code_id("fr_XX"), code_id("en_XX")
    assert tok.prefix_ids("fr", "source") == [2, fr]
    assert tok.prefix_ids("fr", "target") == [2, en]
    assert tok.prefix_ids("fr", "both") == [2, fr, en]
    targets = make_decoder_targets(tok, ["five"], ["fr"], prefix="both")
    five = tok.encode(["five"])[0]
    assert targets.input_ids[0].tolist() == [2, fr, en, *five[:-1]]
    assert targets.labels[0].tolist() == [-100, -100, *five]


def _engine_prefixes(
    model: SpeechEncoderDecoderModel, tok: TargetTokenizer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[list[int]]]:
    """The decoder prefix each search engine is given, through ``generate_batch``."""
    seen: dict[str, list[list[int]]] = {}
    real_beam, real_generate = translate_module.beam_search, model.generate

    def beam_spy(*args: Any, **kwargs: Any) -> Any:
        seen["samu"] = args[3].tolist()
        return real_beam(*args, **kwargs)

    def generate_spy(**kwargs: Any) -> Any:
        seen["generate"] = kwargs["decoder_input_ids"].tolist()
        return real_generate(**kwargs)

    monkeypatch.setattr(translate_module, "beam_search", beam_spy)
    monkeypatch.setattr(model, "generate", generate_spy)
    audio, _ = _audio()
    for engine in ("samu", "generate"):
        generate_batch(
            model, tok, audio, SAMPLES, ["fr", "ca"], num_beams=2, max_new_tokens=3, engine=engine
        )
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("mode", ["source", "target", "both"])
def test_engines_decode_with_the_training_prefix_also_after_reload(
    mode: PrefixMode, mbart50: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = TargetTokenizer.load(mbart50)
    cfg = _config(mbart50, mode)
    torch.manual_seed(0)
    model = build_translator(cfg, tok).eval()
    width = len(tok.prefix_ids("fr", mode))
    training = make_decoder_targets(tok, ["one", "two"], ["fr", "ca"], prefix=mode)
    expected = training.input_ids[:, :width].tolist()
    assert decoder_prefix_mode(model) == mode
    assert _engine_prefixes(model, tok, monkeypatch) == {"samu": expected, "generate": expected}
    folder = save_translator(tmp_path / "final", model, tok, cfg)
    loaded = load_translator(folder)
    assert loaded.config.decoder.prefix == mode == decoder_prefix_mode(loaded.model)
    assert _engine_prefixes(loaded.model, loaded.tokenizer, monkeypatch) == {
        "samu": expected,
        "generate": expected,
    }
    record = json.loads((folder / PREFIX_FILE).read_text())
    assert record["mode"] == mode and record["prefix_ids"]["fr"] == expected[0]
    assert record["prefix_ids"]["ca"] == expected[1]
    generation = GenerationConfig.from_pretrained(str(folder))
    assert getattr(generation, "samu_decoder_prefix", None) == mode


def test_paper_and_mini_configs_use_both() -> None:
    assert DecoderConfig().prefix == "source"  # what every model saved so far was trained with
    paper = load_yaml(ROOT / "configs" / "paper.yaml")
    assert paper["train_st"]["model"]["decoder"]["prefix"] == "both"
    # the mini path starts from the shipped mini-MBART-50 (MBART-50's layout) as the paper
    # starts from MBART-50, with the same prefix (issue #15)
    for name in ("mini.yaml", "mini-grid.yaml"):
        section = load_yaml(ROOT / "configs" / name)["train_st"]
        assert section["model"]["decoder"]["prefix"] == "both", name
    assert TrainSTConfig.__dataclass_fields__["model"] is not None


def _effective_embedding(model: SpeechEncoderDecoderModel) -> torch.Tensor:
    """The token embedding the decoder reads: the frozen table with the added rows."""
    decoder = cast(MBartForCausalLM, model.decoder)
    weight = decoder.get_input_embeddings().weight.detach().clone()
    rows = added_token_rows(decoder)
    if rows is not None:
        weight[rows.token_ids] = rows.rows.detach()
    return weight


def test_new_language_rows_start_apart_and_only_they_train_under_lna_d(
    mbart50: Path, tmp_path: Path
) -> None:
    tok = TargetTokenizer.load(mbart50)
    cfg = _config(mbart50, "source")
    torch.manual_seed(0)
    model = build_translator(cfg, tok)
    ca, cy = tok.lang_token_id("ca"), tok.lang_token_id("cy")
    before = _effective_embedding(model)
    # ca starts as es_XX, cy as en_XX: apart (mean resizing left them ~2.5e-6 apart)
    assert torch.equal(before[ca], before[code_id("es_XX")])
    assert torch.equal(before[cy], before[code_id("en_XX")])
    start_gap = float((before[ca] - before[cy]).norm())
    assert start_gap > 0.05
    # LNA-D + exactly the two rows train
    decoder = cast(MBartForCausalLM, model.decoder)
    d = int(decoder.config.d_model)
    decoder_trainable = sum(p.numel() for p in decoder.parameters() if p.requires_grad)
    assert decoder_trainable == lna_d_parameter_count(decoder.config) + 2 * d
    assert not decoder.get_input_embeddings().weight.requires_grad
    assert summarize_config(cfg).groups["embeddings"].trainable == 2 * d  # model-summary
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    audio, mask = _audio()
    targets = make_decoder_targets(tok, ["twenty", "three"], ["ca", "cy"])
    model.train()
    for _ in range(10):
        out = model(
            inputs=audio,
            attention_mask=mask,
            decoder_input_ids=targets.input_ids,
            decoder_attention_mask=targets.mask.long(),
        )
        loss, _ = label_smoothed_nll_loss(out.logits, targets.labels, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _effective_embedding(model)
    moved = (after - before).norm(dim=1)
    assert float(moved[ca]) > start_gap and float(moved[cy]) > start_gap
    others = torch.ones(len(before), dtype=torch.bool)
    others[[ca, cy]] = False
    assert torch.equal(after[others], before[others])
    # saved and reloaded with the model; the plain embedding table holds them too
    model.eval()
    folder = save_translator(tmp_path / "final", model, tok, cfg)
    loaded = load_translator(folder)
    loaded.model.eval()
    torch.testing.assert_close(_effective_embedding(loaded.model), after, atol=0, rtol=0)
    torch.testing.assert_close(
        cast(MBartForCausalLM, loaded.model.decoder).get_input_embeddings().weight.detach(),
        after,
        atol=0,
        rtol=0,
    )
    with torch.no_grad():
        ids = targets.input_ids
        reference = model(inputs=audio, attention_mask=mask, decoder_input_ids=ids).logits
        again = loaded.model(inputs=audio, attention_mask=mask, decoder_input_ids=ids).logits
    torch.testing.assert_close(again, reference, atol=0, rtol=0)
