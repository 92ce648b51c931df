"""Step 3 (train-st): trainable parts, batches, loss, overfitting, run → export → evaluate."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from fixtures_corpora import mini_corpus, random_st_items, tiny_corpus_config
from samu_st.cli import main
from samu_st.config import from_dict
from samu_st.data.manifest import read_manifest, resolve_audio, write_manifest
from samu_st.losses import ctc_loss, label_smoothed_nll_loss
from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.decoder import lna_d_modules
from samu_st.models.tokenizer import train_target_tokenizer
from samu_st.models.translator import load_translator
from samu_st.report import TranslationResults
from samu_st.steps.tasks_st import CharEncoder, STCollator, STTask
from samu_st.steps.train_st import TrainSTConfig, build_st_model, run_train_st_result
from samu_st.text import build_char_vocab, normalize_generic
from samu_st.training.schedule import check_param_groups
from samu_st.training.tracking import read_jsonl

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TINY_MODEL: dict[str, Any] = {
    "encoder": {"size": "tiny", "mode": "adapters"},
    "decoder": {"preset": "tiny"},
    "length_adaptor_layers": 2,
}
QUIET = {"tensorboard": False, "progress_bar": False}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_corpus_config(
        seed=3, number_max=20, dev_per_language=3, test_per_language=3, test_speakers=2
    )
    return mini_corpus(tmp_path_factory, cfg)


def _config(**fields: Any) -> TrainSTConfig:
    data = {"out_dir": "unused", "data": {"manifests": ["unused"]}, "model": TINY_MODEL, **fields}
    return from_dict(TrainSTConfig, data)


def _ids(params: Any) -> set[int]:
    return {id(p) for p in params}


def test_trainable_parts_and_no_work_on_frozen_ones() -> None:
    tokenizer = train_target_tokenizer(["one", "two", "three", "twenty"], 30)
    chars = CharEncoder(build_char_vocab(["un deux", "zwei"]), normalize_generic)
    assert len(chars) == 11  # d e i n u w x z, | [UNK] [PAD]
    model = build_st_model(_config(), tokenizer, ctc_classes=len(chars)).train()
    translator = model.translator
    encoder = model.speech_encoder
    expected = _ids(p for a in bottleneck_adapters(encoder) for p in a.parameters())
    assert len(bottleneck_adapters(encoder)) == 4  # 2 layers x (attention, feed-forward)
    expected |= _ids(encoder.adapter.parameters()) | _ids(translator.enc_to_dec_proj.parameters())
    expected |= _ids(p for m in lna_d_modules(translator.decoder).values() for p in m.parameters())
    assert model.ctc_head is not None
    expected |= _ids(model.ctc_head.parameters())
    assert _ids(p for p in model.parameters() if p.requires_grad) == expected
    task = STTask(tokenizer)
    groups = check_param_groups(model, task.param_groups(model, _config().train.optim))
    assert [g["name"] for g in groups] == ["encoder", "adaptor", "decoder", "ctc_head"]
    # the frozen conv front end builds no autograd graph; frozen weights get no gradient
    seen: list[bool] = []
    encoder.feature_extractor.register_forward_hook(
        lambda m, a, out: seen.append(out.requires_grad)
    )
    collate = STCollator(tokenizer, 64, chars)
    wav = torch.randn(8000).numpy()
    texts = [("fr", "Un deux", "one two"), ("de", "zwei", "two")]
    items = [
        {
            "wav": wav[: 8000 - 3000 * i],
            "id": f"u{i}",
            "language": lang,
            "index": i,
            "source_text": src,
            "target_text": tgt,
        }
        for i, (lang, src, tgt) in enumerate(texts)
    ]
    batch = collate(items)
    assert batch.decoder_input_ids[:, 1].tolist() == [
        tokenizer.lang_token_id(x) for x in ("fr", "de")
    ]
    assert batch.ctc_label_lengths.tolist() == [7, 4]  # "un|deux", "zwei"
    out = model(
        batch.audio.input_values,
        batch.audio.attention_mask,
        batch.decoder_input_ids,
        batch.decoder_mask,
    )
    assert seen == [False]
    assert (
        out.ctc_logits.shape[:2] == (2, int(out.ctc_lengths.max()))
        and out.ctc_logits.shape[2] == 11
    )
    assert out.ctc_lengths.tolist() == [24, 15]  # 50 Hz frames, before the length adaptor
    model.eval()  # no dropout or time masking: the task's forward sees the same numbers
    out = model(
        batch.audio.input_values,
        batch.audio.attention_mask,
        batch.decoder_input_ids,
        batch.decoder_mask,
    )
    task = STTask(tokenizer, label_smoothing=0.1, aux_ctc_weight=0.25, ctc_blank=chars.blank)
    result = task.loss(model, batch)
    ce, _ = label_smoothed_nll_loss(out.logits, batch.labels, 0.1)
    log_probs = torch.log_softmax(out.ctc_logits, -1)
    ctc = ctc_loss(
        log_probs, out.ctc_lengths, batch.ctc_labels, batch.ctc_label_lengths, chars.blank
    )
    torch.testing.assert_close(result.loss, 0.75 * ce + 0.25 * ctc)
    assert result.num_items == int((batch.labels != -100).sum()) and "ctc" in result.metrics
    result.loss.backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert all(a.up.weight.grad.abs().sum() > 0 for a in bottleneck_adapters(encoder))


def test_logits_only_at_label_positions_equal_the_full_projection() -> None:
    """STModel(label_mask=...): the output projection runs on the scored positions only; the
    logits, the loss and every gradient are those of the full (B, L, V) projection, also with
    trainable rows for added tokens (their own logits hook)."""
    from samu_st.models.decoder import attach_added_rows

    tokenizer = train_target_tokenizer(["one", "two", "three", "twenty"], 30)
    model = build_st_model(_config(), tokenizer).eval()  # eval: no dropout, same numbers
    attach_added_rows(model.translator.decoder, [5, 7])
    items = random_st_items()
    batch = STCollator(tokenizer, 64)(items)
    scored = batch.labels != -100
    assert 0 < int(scored.sum()) < scored.numel()  # prefix and padding are left out

    def run(packed: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        args = (batch.audio.input_values, batch.audio.attention_mask, batch.decoder_input_ids,
                batch.decoder_mask)  # fmt: skip
        if packed:
            logits = model(*args, scored).logits
            targets = batch.labels[scored].unsqueeze(0)
        else:
            full = model(*args).logits
            logits, targets = full[scored].unsqueeze(0), batch.labels[scored].unsqueeze(0)
            loss_full, _ = label_smoothed_nll_loss(full, batch.labels, 0.1)
        loss, _ = label_smoothed_nll_loss(logits, targets, 0.1)
        if not packed:
            torch.testing.assert_close(loss, loss_full)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), loss.detach(), grads

    full_logits, full_loss, full_grads = run(False)
    logits, loss, grads = run(True)
    assert logits.shape == (1, int(scored.sum()), full_logits.shape[-1])
    torch.testing.assert_close(logits, full_logits)
    torch.testing.assert_close(loss, full_loss)
    assert grads.keys() == full_grads.keys() and any("added_rows" in n for n in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], msg=name)
    # the hook is gone: a call without a mask projects every position again
    out = model(batch.audio.input_values, batch.audio.attention_mask, batch.decoder_input_ids,
                batch.decoder_mask)  # fmt: skip
    assert out.logits.shape[:2] == batch.labels.shape


def _few(corpus: Path, tmp_path: Path, n: int = 4) -> Path:
    source = corpus / "train" / "fr.jsonl"
    utts = [replace(u, audio=str(resolve_audio(u, source))) for u in read_manifest(source)[:n]]
    write_manifest(tmp_path / "few.jsonl", utts)
    return tmp_path / "few.jsonl"


@needs_espeak
def test_overfits_a_handful_of_utterances(corpus: Path, tmp_path: Path) -> None:
    model = {**TINY_MODEL, "decoder": {"preset": "tiny", "trainable": "full"}}
    train = {
        "max_steps": 60,
        "log_every": 5,
        "save_every": 1000,
        **QUIET,
        "optim": {"lr": 1e-2},
        "schedule": {"phase_ratio": [0.1, 0.9, 0.0]},
    }
    cfg = from_dict(
        TrainSTConfig,
        {
            "out_dir": str(tmp_path / "run"),
            "data": {"manifests": [str(_few(corpus, tmp_path))]},
            "model": model,
            "train": train,
            "tokenizer_vocab_size": 40,
            "label_smoothing": 0.0,
        },
    )
    _, result = run_train_st_result(cfg)
    losses = [r["loss"] for r in result.history]
    # measured: 3.56 -> 0.27 (4 clips of 0.25-0.55 s, 60 updates, ~1.5 s)
    assert losses[0] > 3.0 and losses[-1] < 0.3 * losses[0], losses


@needs_espeak
def test_train_export_resume_and_evaluate(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "st"
    data = {"manifests": [str(corpus)], "max_duration": 12.0, "language_temperature": 2.0}
    section = {
        "out_dir": str(out),
        "data": data,
        "dev": {**data, "split": "dev"},
        # a prefix other than the default: training, validation and export must all use it
        "model": {**TINY_MODEL, "decoder": {"preset": "tiny", "prefix": "both"}},
        "train": {"max_steps": 4, "log_every": 2, "save_every": 2, "val_every": 2, **QUIET},
        "tokenizer_vocab_size": 50,
        "aux_ctc_weight": 0.3,
        "val_bleu_utterances": 4,
    }
    config = tmp_path / "mini.yaml"
    config.write_text(yaml.safe_dump({"pretrain": {"ignored": True}, "train_st": section}))
    assert main(["train-st", str(config)]) == 0
    final = out / "final"
    loaded = load_translator(final)
    assert loaded.config.encoder.mode == "adapters" and len(loaded.tokenizer) > 30
    prefix = json.loads((final / "decoder_prefix.json").read_text())
    tok = loaded.tokenizer
    assert prefix["mode"] == "both" == loaded.config.decoder.prefix
    assert prefix["prefix_ids"]["fr"] == [2, tok.lang_token_id("fr"), tok.lang_token_id("en")]
    assert not any("ctc" in name for name, _ in loaded.model.named_parameters())
    hours = json.loads((final / "train_hours.json").read_text())["train_hours"]
    assert set(hours) == {"fr", "de"} and all(0 < h < 0.01 for h in hours.values())
    log = read_jsonl(out / "train_log.jsonl")
    val = [r for r in log if r["kind"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    assert {"val_loss", "val_nll", "val_ctc", "val_bleu"} <= set(val[-1])
    assert val[-1]["val_bleu_utterances"] == 4
    assert {"config.yaml", "tokenizer", "ctc_vocab.json"} <= {p.name for p in out.iterdir()}
    tokenizer_files = (out / "tokenizer" / "tokenizer.json").read_bytes()
    assert main(["train-st", str(config)]) == 2  # checkpoints exist: refused before any write
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer_files
    assert main(["train-st", str(config), "train.max_steps=6", "--resume"]) == 0
    assert read_jsonl(out / "train_log.jsonl")[-1]["step"] == 6
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(final),
                str(corpus),
                "--out",
                str(ev),
                "--beam",
                "2",
                "--max-utterances",
                "2",
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    results = json.loads((ev / "results.json").read_text())
    assert set(results) == {"model", "bleu", "sacrebleu_signature", "n_utterances", "train_hours"}
    assert results["model"] == "st" and results["n_utterances"] == {"fr": 2, "de": 2}
    assert results["train_hours"] == pytest.approx(hours)
    assert TranslationResults.from_json(ev / "results.json").bleu.high is not None


@needs_espeak
def test_encoder_and_decoder_from_step_folders(corpus: Path, tmp_path: Path) -> None:
    """The pipeline's case: a step-1/2 encoder folder and a pretrain-text MBART folder (model
    + tokenizer); the exported translator keeps the decoder folder's tokenizer."""
    from transformers import MBartForConditionalGeneration, Wav2Vec2Model

    from samu_st.models.decoder import mbart_config
    from samu_st.models.encoder import EncoderConfig, wav2vec2_config

    torch.manual_seed(0)
    Wav2Vec2Model(wav2vec2_config(EncoderConfig(size="tiny"))).save_pretrained(tmp_path / "enc")
    tokenizer = train_target_tokenizer(["one", "two", "twenty", "seven", "hundred"], 30)
    mbart = MBartForConditionalGeneration(mbart_config("tiny", len(tokenizer), encoder_layers=1))
    mbart.save_pretrained(tmp_path / "mbart")
    tokenizer.save(tmp_path / "mbart")
    model = {
        "encoder": {"pretrained": str(tmp_path / "enc"), "mode": "adapters"},
        "decoder": {"pretrained": str(tmp_path / "mbart")},
    }
    cfg = from_dict(
        TrainSTConfig,
        {
            "out_dir": str(tmp_path / "run"),
            "data": {"manifests": [str(corpus)]},
            "model": model,
            "train": {"max_steps": 2, "save_every": 10, **QUIET},
        },
    )
    final, result = run_train_st_result(cfg, resume=True)  # the pipeline always resumes
    assert result.step == 2 and not (tmp_path / "run" / "tokenizer").exists()
    loaded = load_translator(final)
    assert loaded.tokenizer.hf.get_vocab() == tokenizer.hf.get_vocab()
    frozen = mbart.model.decoder.embed_tokens.weight
    torch.testing.assert_close(loaded.model.decoder.get_input_embeddings().weight, frozen)


def test_mini_config_section() -> None:
    from samu_st.config import load_step_config

    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_step_config(TrainSTConfig, configs / "mini.yaml", "train_st")
    # since issue #15 the demo trains the paper's set: adapters + LNA-D on the shipped decoder
    assert (cfg.model.encoder.mode, cfg.model.decoder.trainable) == ("adapters", "lna")
    assert cfg.model.encoder.adapter_ratio == 0.25 and cfg.label_smoothing == 0.1
    assert cfg.dev is not None and cfg.dev.split == "dev" and cfg.train.cpu_bf16
