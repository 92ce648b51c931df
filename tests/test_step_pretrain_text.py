"""Text denoising pretraining of the small MBART: text infilling, export loaded by step 3,
overfit, the translate objective from an init folder, mini config and CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fixtures_corpora import mini_corpus, quiet_train, tiny_corpus_config
from samu_st.cli import main
from samu_st.config import load_step_config
from samu_st.models.decoder import DecoderConfig, build_mbart, load_mbart_decoder
from samu_st.models.encoder import EncoderConfig
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer
from samu_st.models.translator import TranslatorConfig, build_translator
from samu_st.steps.data import DataConfig
from samu_st.steps.pretrain_text import PretrainTextConfig, read_examples, run_pretrain_text
from samu_st.steps.tasks_text import DenoisingCollator, NoiseConfig, TextDataset, infill
from samu_st.training.tracking import read_jsonl

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_CORPUS = tiny_corpus_config(number_max=30, train_min=10, train_max=10)
MASK = 4
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_corpus(tmp_path_factory, TINY_CORPUS)


def tiny_config(out: Path, corpus: Path, steps: int, **kw: Any) -> PretrainTextConfig:
    return PretrainTextConfig(
        out_dir=str(out),
        data=DataConfig(manifests=(str(corpus),)),
        dev=DataConfig(manifests=(str(corpus),), split="dev"),
        preset="tiny",
        vocab_size=60,
        max_tokens=256,
        train=quiet_train(steps, 1e-2, **{"log_every": 10, **kw}),
    )


def test_infill_masks_about_35_percent_of_words_in_spans() -> None:
    rng = np.random.default_rng(0)
    words = [[10 + i, 100 + i] for i in range(20)]  # 20 words of 2 tokens
    kept_share, masks = [], []
    for _ in range(400):
        out = infill(words, MASK, NoiseConfig(), rng)
        kept = [t for t in out if t != MASK]
        # word i is tokens (10 + i, 100 + i): kept words stay whole and in order
        assert kept == sorted(kept, key=lambda t: (t - 100, 1) if t >= 100 else (t - 10, 0))
        firsts = [t for t in kept if t < 100]
        assert [t for t in kept if t >= 100] == [t + 90 for t in firsts]
        kept_share.append(len(kept) / 40)
        masks.append(out.count(MASK))
    assert 0.62 < np.mean(kept_share) < 0.70  # 35 % masked, minus overlapping spans
    assert 1.0 < np.mean(masks) < 4.0  # Poisson(3.5) spans: ~2 per 7 masked words
    assert infill(words, MASK, NoiseConfig(mask_ratio=0.0), rng) == [t for w in words for t in w]
    short = [infill([[7]], MASK, NoiseConfig(), rng) for _ in range(200)]
    assert 0.2 < np.mean([s != [7] for s in short]) < 0.5  # one word is masked ~35 % of the time


def test_collator_formats_mbart_inputs() -> None:
    tok = train_target_tokenizer(["one two three", "four five six seven"], vocab_size=40)
    data = TextDataset(["four five six seven"], ["four five six seven"], ["en"], tok)
    batch = DenoisingCollator(tok, None, 64)([data[0]])  # no noise: the text as it is
    ids = tok.encode(["four five six seven"])[0]
    lang = tok.lang_token_id("en")
    assert batch.input_ids[0].tolist() == [*ids, lang]  # text </s> <lang>
    assert batch.decoder_input_ids[0].tolist() == [tok.eos_id, lang, *ids[:-1]]
    assert batch.labels[0].tolist() == [-100, *ids]
    noised = DenoisingCollator(tok, NoiseConfig(mask_ratio=1.0), 64, seed=3)([data[0]])
    assert tok.hf.mask_token_id in noised.input_ids[0].tolist()
    again = DenoisingCollator(tok, NoiseConfig(mask_ratio=1.0), 64, seed=3)([data[0]])
    assert torch.equal(noised.input_ids, again.input_ids)  # validation noise is fixed


def test_end_to_end_export_is_step_3s_decoder(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", corpus, 4, val_every=2, cpu_bf16=True)
    folder = run_pretrain_text(cfg)
    tokenizer = TargetTokenizer.load(folder)
    assert tokenizer.kind == "trained" and (tmp_path / "run" / "tokenizer").is_dir()
    decoder = load_mbart_decoder(folder)
    assert decoder.config.vocab_size == len(tokenizer) and decoder.config.d_model == 16
    val = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if r["kind"] == "val"]
    assert [r["step"] for r in val] == [2, 4] and 0 <= val[-1]["val_token_acc"] <= 1
    # Step 3 with the translator defaults: the decoder folder also provides the tokenizer.
    model_cfg = TranslatorConfig(
        encoder=EncoderConfig(size="tiny", mode="adapters"),
        decoder=DecoderConfig(pretrained=str(folder)),
    )
    translator = build_translator(model_cfg, tokenizer)
    built = build_mbart(DecoderConfig(pretrained=str(folder)), len(tokenizer))
    assert torch.equal(
        translator.decoder.model.decoder.embed_tokens.weight,
        built.model.decoder.embed_tokens.weight,
    )


def test_overfits_and_translate_objective_starts_from_it(corpus: Path, tmp_path: Path) -> None:
    folder = run_pretrain_text(tiny_config(tmp_path / "run", corpus, 60))
    records = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    # measured: 3.83 -> 0.64 over 60 updates (first window: updates 1-10)
    assert losses[0] > 3.0 and losses[-1] < 0.3 * losses[0], losses
    mt = replace(tiny_config(tmp_path / "mt", corpus, 2), objective="translate", init=str(folder))
    sources, targets, langs = read_examples(mt, mt.data)
    assert set(langs) == {"fr", "de"} and sources[0] != targets[0]
    out = run_pretrain_text(mt)
    assert TargetTokenizer.load(out).language_ids == TargetTokenizer.load(folder).language_ids
    assert not (tmp_path / "mt" / "tokenizer").exists()  # init's tokenizer is used


def test_mini_config_and_cli(corpus: Path, tmp_path: Path) -> None:
    cfg = load_step_config(PretrainTextConfig, CONFIGS / "mini.yaml", "pretrain_text")
    assert cfg.preset == "mini" and cfg.objective == "denoise"
    config = tmp_path / "steps.yaml"
    config.write_text(
        "pretrain_text:\n"
        f"  out_dir: {tmp_path / 'cli'}\n"
        f"  data: {{manifests: [{corpus}]}}\n"
        "  preset: tiny\n"
        "  vocab_size: 60\n"
        "  train: {max_steps: 2, progress_bar: false, tensorboard: false}\n",
        encoding="utf-8",
    )
    assert main(["pretrain-text", str(config), "text_fields=[target_text, source_text]"]) == 0
    tokenizer = TargetTokenizer.load(tmp_path / "cli" / "final")
    assert len(tokenizer) > 60  # sources in two languages enlarge the vocabulary
