"""Step 1 (wav2vec2 SSL pretraining): masks and distractors, Gumbel decay, end to end, overfit."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Model

from fixtures_corpora import NO_DROPOUT, mini_corpus, quiet_train, tiny_corpus_config
from samu_st.cli import main
from samu_st.config import load_step_config
from samu_st.data.manifest import read_manifest, resolve_audio, write_manifest
from samu_st.errors import ConfigError
from samu_st.models.encoder import EncoderConfig, build_wav2vec2
from samu_st.models.samu import SamuModel
from samu_st.steps.data import DataConfig
from samu_st.steps.pretrain import PretrainConfig, build_pretraining_model, run_pretrain
from samu_st.steps.tasks_ssl import MaskingConfig, PretrainTask, gumbel_temperature, sample_masks
from samu_st.training.tracking import read_jsonl

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
    pytest.mark.usefixtures("one_thread"),
]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_CORPUS = tiny_corpus_config(unlabeled_per_language=2)
# Clips are 0.25-0.6 s (12-30 frames): short spans.
MASKING = MaskingConfig(mask_length=2, mask_prob=0.4, temperature_decay=0.99)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_corpus(tmp_path_factory, TINY_CORPUS)


def tiny_config(out: Path, manifest: Path, steps: int, **kw: object) -> PretrainConfig:
    train = quiet_train(steps, float(kw.pop("lr", 3e-3)), log_every=5, **kw)  # type: ignore[arg-type]
    return PretrainConfig(
        out_dir=str(out),
        data=DataConfig(manifests=(str(manifest),), max_duration=10.0),
        encoder=EncoderConfig(size="tiny", train_feature_encoder=True, **NO_DROPOUT),
        masking=MASKING,
        train=train,
    )


def test_masks_and_distractors_never_touch_padding() -> None:
    np.random.seed(0)
    lengths = torch.tensor([40, 12, 25])
    cfg = MaskingConfig(mask_length=3, mask_prob=0.5)
    for negatives_from in ("masked", "unpadded"):
        mask, neg = sample_masks(lengths, 40, 7, replace(cfg, negatives_from=negatives_from))
        assert mask.shape == (3, 40) and neg.shape == (3, 40, 7)
        for b, n in enumerate(lengths.tolist()):
            assert not mask[b, n:].any() and mask[b, :n].sum() >= 2
            frames = neg[b][mask[b]] - b * 40  # distractors of the masked frames, in-row index
            assert frames.min() >= 0 and frames.max() < n  # same utterance, never padding
            own = np.nonzero(mask[b])[0][:, None]
            assert not (frames == own).any()  # never the positive itself
            if negatives_from == "masked":
                assert mask[b][frames].all()  # fairseq: distractors are other masked frames
    with pytest.raises(ConfigError, match="only 2 frame"):
        sample_masks(torch.tensor([2, 30]), 30, 5, cfg)


def test_gumbel_temperature_decays_to_its_floor() -> None:
    cfg = MaskingConfig()  # fairseq: 2.0 -> 0.5, x 0.999995 per update
    assert gumbel_temperature(0, cfg) == 2.0
    assert gumbel_temperature(100_000, cfg) == pytest.approx(2.0 * 0.999995**100_000)
    assert gumbel_temperature(10_000_000, cfg) == 0.5
    model = build_pretraining_model(EncoderConfig(size="tiny"))
    task = PretrainTask(model, MaskingConfig(temperature_decay=0.9))
    task.on_step(3)
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.9**3)


def test_pretraining_model_freezing_and_mask_embedding() -> None:
    model = build_pretraining_model(EncoderConfig(size="tiny", train_feature_encoder=False))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("wav2vec2.feature_extractor.") for n in frozen)
    assert model.quantizer.codevectors.requires_grad
    with pytest.raises(ConfigError, match="mask_time_prob"):
        build_pretraining_model(EncoderConfig(size="tiny", mask_time_prob=0.0))
    with pytest.raises(ConfigError, match="must be full"):
        PretrainConfig(out_dir="x", data=DataConfig(), encoder=EncoderConfig(mode="frozen"))


def test_end_to_end_export_loads_as_the_next_steps_encoder(corpus: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", corpus / "unlabeled.jsonl", 6, cpu_bf16=True)
    cfg = replace(cfg, dev=DataConfig(manifests=(str(corpus),), split="dev"))
    cfg = replace(cfg, train=replace(cfg.train, val_every=3, mixed_precision="bf16"))
    folder = run_pretrain(cfg)
    assert folder == tmp_path / "run" / "final"
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Wav2Vec2Model"]
    records = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert {"contrastive", "diversity", "perplexity", "temperature"} <= set(train[0])
    assert all(np.isfinite(r["loss"]) for r in train)  # bf16 autocast on CPU works
    assert train[1]["temperature"] < train[0]["temperature"] < 2.0
    val = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in val] == [3, 6] and np.isfinite(val[-1]["val_contrastive"])
    # Step 2 / 3 load it as their encoder; continued pretraining gets fresh heads.
    encoder = build_wav2vec2(EncoderConfig(pretrained=str(folder)))
    assert isinstance(encoder, Wav2Vec2Model)
    saved = Wav2Vec2Model.from_pretrained(str(folder))
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, saved.state_dict()[name]), name
    assert SamuModel.from_config(EncoderConfig(pretrained=str(folder)), 16).out_dim == 16
    again = build_pretraining_model(EncoderConfig(pretrained=str(folder)))
    assert torch.equal(again.wav2vec2.encoder.layers[0].attention.q_proj.weight,
                       encoder.encoder.layers[0].attention.q_proj.weight)  # fmt: skip


def test_overfits_a_handful_of_clips(corpus: Path, tmp_path: Path) -> None:
    source = corpus / "train" / "fr.jsonl"
    utts = [replace(u, audio=str(resolve_audio(u, source))) for u in read_manifest(source)][:4]
    four = tmp_path / "four.jsonl"
    write_manifest(four, utts)
    run_pretrain(tiny_config(tmp_path / "run", four, 200))
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl")]
    # measured: 2.35 (~ ln 11, 10 distractors) -> 0.85 after 200 updates
    assert losses[0] > 2.0 and losses[-1] < 0.5 * losses[0], losses


def test_mini_config_and_cli(corpus: Path, tmp_path: Path) -> None:
    cfg = load_step_config(PretrainConfig, CONFIGS / "mini.yaml", "pretrain")
    assert cfg.encoder.size == "mini" and cfg.encoder.train_feature_encoder
    config = tmp_path / "steps.yaml"
    config.write_text(
        "pretrain:\n"
        f"  out_dir: {tmp_path / 'cli'}\n"
        f"  data: {{manifests: [{corpus / 'unlabeled.jsonl'}], max_duration: 10.0}}\n"
        "  encoder: {size: tiny, train_feature_encoder: true}\n"
        "  masking: {mask_length: 2, mask_prob: 0.4}\n"
        "  train: {max_steps: 4, progress_bar: false, tensorboard: false}\n",
        encoding="utf-8",
    )
    assert main(["pretrain", str(config), "train.max_steps=2"]) == 0
    assert (tmp_path / "cli" / "final" / "model.safetensors").is_file()
    assert "max_steps: 2" in (tmp_path / "cli" / "config.yaml").read_text()
