"""Step 1: wav2vec 2.0 self-supervised pretraining on unlabeled audio (from scratch or continued).

``run_pretrain(cfg)`` trains transformers' ``Wav2Vec2ForPreTraining`` with the task of
:mod:`samu_st.steps.tasks_ssl` in the shared loop and exports the encoder alone,
``<out_dir>/final``, a ``Wav2Vec2Model`` folder that ``EncoderConfig(pretrained=...)`` loads
(step 2 and the baselines start from it). The quantizer and projection heads stay in the
checkpoints only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from transformers import Wav2Vec2ForPreTraining

from samu_st.atomic import atomic_folder
from samu_st.data.collate import collate_audio
from samu_st.errors import ConfigError
from samu_st.models.ctc import default_feature_extractor
from samu_st.models.encoder import (
    EncoderConfig,
    apply_encoder_mode,
    load_wav2vec2_model,
    wav2vec2_config,
)
from samu_st.steps.data import DataConfig
from samu_st.steps.speech_data import (
    dev_dataset,
    eval_loader,
    final_dir,
    on_main,
    seed_model_init,
    train_data,
)
from samu_st.steps.tasks_ssl import MaskingConfig, PretrainTask, scale_feature_encoder_grad
from samu_st.training import TrainConfig, train

log = logging.getLogger(__name__)

_HEADS = ("quantizer.", "project_hid.", "project_q.")


@dataclass(frozen=True)
class PretrainConfig:
    """Step 1 (``samu-st pretrain CONFIG``): self-supervised pretraining of the speech encoder."""

    out_dir: str  # run folder: checkpoints, logs, config.yaml; the encoder goes to out_dir/final
    data: DataConfig  # unlabeled audio (e.g. mini-CoVoST's unlabeled.jsonl); texts are ignored
    dev: DataConfig | None = None  # optional held-out audio: contrastive loss logged at val_every
    # Where the encoder starts: a preset from scratch (pretrained: null), or a local wav2vec2
    # folder to continue (a Wav2Vec2Model folder gets fresh quantizer/projection heads).
    # mode must be full; train_feature_encoder: true trains the conv front end too (needed from
    # scratch); mask_time_prob must be > 0 so the model has its mask embedding.
    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(train_feature_encoder=True)
    )
    masking: MaskingConfig = field(default_factory=MaskingConfig)  # masks, distractors, Gumbel
    num_negatives: int | None = None  # distractors per masked frame; None: the model config's
    # Codebook entries per group (G=2 groups); None: the model config's. Fewer codes make the
    # targets coarser, which a small model on little data learns sooner.
    codevectors_per_group: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)  # loop, optimiser, LR schedule

    def __post_init__(self) -> None:
        if self.encoder.mode != "full":
            raise ConfigError(f"pretrain.encoder.mode: must be full, got {self.encoder.mode!r}")
        if self.encoder.family != "wav2vec2":
            raise ConfigError(
                f"pretrain.encoder.family: step 1 is wav2vec2's contrastive pretraining "
                f"(Wav2Vec2ForPreTraining); a {self.encoder.family} encoder cannot be pretrained "
                "here. Start step 2 (distill) from a pretrained checkpoint of that family "
                "(distill.encoder.pretrained) instead"
            )
        for name in ("num_negatives", "codevectors_per_group"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"pretrain.{name}: must be >= 1")


def build_pretraining_model(
    cfg: EncoderConfig,
    num_negatives: int | None = None,
    codevectors_per_group: int | None = None,
) -> Wav2Vec2ForPreTraining:
    """``Wav2Vec2ForPreTraining`` from ``cfg.pretrained`` (heads fresh when the folder has none)
    or from the ``cfg.size`` preset, with ``cfg``'s freezing of the conv front end."""
    extra: dict[str, int] = {}
    if num_negatives is not None:
        extra["num_negatives"] = num_negatives
    if codevectors_per_group is not None:
        extra["num_codevectors_per_group"] = codevectors_per_group
    if cfg.pretrained is None:
        model = Wav2Vec2ForPreTraining(wav2vec2_config(cfg, **extra))
    else:
        model = load_wav2vec2_model(
            Wav2Vec2ForPreTraining,
            cfg.pretrained,
            cfg,
            allow_missing=lambda key: key.startswith(_HEADS),
            **cast(dict[str, Any], extra),
        )
    if getattr(model.wav2vec2, "masked_spec_embed", None) is None:
        raise ConfigError(
            "pretrain.encoder: the model has no mask embedding (its mask_time_prob and "
            "mask_feature_prob are 0); set encoder.mask_time_prob (e.g. 0.05)"
        )
    model.requires_grad_(True)
    apply_encoder_mode(model.wav2vec2, "full", train_feature_encoder=cfg.train_feature_encoder)
    if cfg.gradient_checkpointing:
        model.wav2vec2.activation_checkpointing_enable()
    return model


def export_encoder(model: Wav2Vec2ForPreTraining, folder: Path) -> Path:
    """Save ``model.wav2vec2`` as a ``Wav2Vec2Model`` folder (+ the XLS-R feature extractor),
    atomically."""
    with atomic_folder(folder, point="pretrain.final") as tmp:
        model.wav2vec2.save_pretrained(tmp)
        default_feature_extractor().save_pretrained(tmp)
    return folder


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> Path:
    """Train step 1 as ``cfg`` says; returns ``<out_dir>/final`` (the encoder folder)."""
    dataset, sampler, train_cfg = train_data(cfg.data, cfg.train)
    dev_set = dev_dataset(cfg.dev)
    val_loader = None
    if cfg.dev is not None and dev_set is not None:
        val_loader = eval_loader(cfg.dev, dev_set, collate_audio)
    seed_model_init(cfg.train)
    model = build_pretraining_model(cfg.encoder, cfg.num_negatives, cfg.codevectors_per_group)
    scale_feature_encoder_grad(model, cfg.masking.feature_grad_mult)
    task = PretrainTask(model, cfg.masking)
    log.info(
        "pretraining: %d clips, %.1f min of audio, %d trainable parameters",
        len(dataset),
        float(dataset.durations.sum()) / 60,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    train(task, model, dataset, collate_audio, sampler, train_cfg, cfg.out_dir, resume,
          val_loader, run_config=cfg)  # fmt: skip
    folder = final_dir(cfg.out_dir)
    on_main(lambda: export_encoder(model.cpu(), folder))
    return folder
