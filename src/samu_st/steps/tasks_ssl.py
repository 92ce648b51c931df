"""Step 1 task: wav2vec 2.0 self-supervised pretraining (transformers' ``Wav2Vec2ForPreTraining``).

The model computes the contrastive and diversity losses itself once it is given the masked time
steps and the sampled distractors; this task draws both with transformers' own helpers
(``_compute_mask_indices``, ``_sample_negative_indices``), on the sub-sampled frame mask so that
padding is never masked, predicted or sampled, and decays the Gumbel-softmax temperature.

Differences from fairseq's wav2vec 2.0 recipe, kept small on purpose: no feature L2 penalty; the
conv front end's gradient scaling (``feature_grad_mult``, 0.1 in fairseq) is an option here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import (
    _compute_mask_indices,
    _sample_negative_indices,
)

from samu_st.audio import SAMPLE_RATE
from samu_st.data.collate import AudioBatch
from samu_st.errors import ConfigError
from samu_st.models.encoder import lengths_to_mask
from samu_st.training.task import LossOutput, TaskBase

#: A frame's distractors are drawn from the other candidate frames: at least 2 candidates.
_MIN_CANDIDATES = 2


@dataclass(frozen=True)
class MaskingConfig:
    """What is masked and predicted, and the Gumbel-softmax temperature schedule."""

    mask_prob: float = 0.65  # share of frames that START a masked span (fairseq: 0.65)
    mask_length: int = 10  # frames per masked span (fairseq: 10 = 200 ms)
    min_masks: int = 2  # masked spans per utterance at least (fairseq: 2)
    # masked: distractors come from the other MASKED frames of the same utterance (fairseq,
    # wav2vec 2.0 §3.2); unpadded: from all its non-padded frames. Padding is never sampled.
    negatives_from: Literal["masked", "unpadded"] = "masked"
    max_temperature: float = 2.0  # Gumbel temperature at update 0 (fairseq: 2.0)
    min_temperature: float = 0.5  # floor of the decay (fairseq: 0.5)
    temperature_decay: float = 0.999995  # multiplied in per update (fairseq: 0.999995)
    diversity_weight: float = 0.1  # alpha of L = L_m + alpha L_d (fairseq: 0.1)
    feature_grad_mult: float = 1.0  # scales the conv front end's gradient (fairseq: 0.1)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob <= 1.0:
            raise ConfigError(f"masking.mask_prob: must be in (0, 1], got {self.mask_prob}")
        if self.mask_length < 1 or self.min_masks < 0:
            raise ConfigError("masking.mask_length must be >= 1 and min_masks >= 0")
        if not 0 < self.min_temperature <= self.max_temperature:
            raise ConfigError("masking: need 0 < min_temperature <= max_temperature")
        if not 0 < self.temperature_decay <= 1:
            raise ConfigError("masking.temperature_decay: must be in (0, 1]")
        if self.feature_grad_mult < 0:
            raise ConfigError("masking.feature_grad_mult: must be >= 0")


def gumbel_temperature(step: int, cfg: MaskingConfig) -> float:
    """fairseq's schedule: ``max(max_temperature * decay ** step, min_temperature)``."""
    return max(cfg.max_temperature * cfg.temperature_decay**step, cfg.min_temperature)


def sample_masks(
    frame_lengths: torch.Tensor, num_frames: int, num_negatives: int, cfg: MaskingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Masked spans and distractor indices for a padded batch (numpy's global RNG).

    Args:
        frame_lengths: (B,) valid frames per utterance (each >= ``mask_length`` and >= 2).
        num_frames: T, the padded frame count.
        num_negatives: K distractors per frame.

    Returns:
        ``mask (B, T) bool`` (never True on padding) and ``negatives (B, T, K) int`` (flat
        indices into the (B*T) frames, as ``Wav2Vec2ForPreTraining`` expects).
    """
    lengths = frame_lengths.detach().cpu().long()
    shortest = int(lengths.min())
    if shortest < max(cfg.mask_length, _MIN_CANDIDATES):
        raise ConfigError(
            f"an utterance has only {shortest} frame(s): pretraining needs at least "
            f"max(mask_length={cfg.mask_length}, 2); filter out shorter clips"
        )
    valid = lengths_to_mask(lengths, num_frames)
    mask = _compute_mask_indices(
        (len(lengths), num_frames),
        cfg.mask_prob,
        cfg.mask_length,
        attention_mask=cast(torch.LongTensor, valid.long()),
        min_masks=cfg.min_masks,
    )
    mask &= valid.numpy()  # _compute_mask_indices may clamp a span onto the last padded frame
    pool = valid.numpy()
    if cfg.negatives_from == "masked":
        # Rows with fewer than 2 masked frames have no distractor to draw: use their valid ones.
        enough = mask.sum(axis=1) >= _MIN_CANDIDATES
        pool = np.where(enough[:, None], mask, pool)
    negatives = _sample_negative_indices((len(lengths), num_frames), num_negatives, pool)
    return mask, negatives


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_feature_encoder_grad(model: Wav2Vec2ForPreTraining, scale: float) -> None:
    """Hook the conv front end so its parameters get ``scale`` times their gradient."""
    if scale == 1.0:
        return

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return _GradScale.apply(output, scale) if output.requires_grad else output

    model.wav2vec2.feature_extractor.register_forward_hook(hook)


class PretrainTask(TaskBase):
    """Contrastive + diversity loss per masked frame of a collated :class:`AudioBatch`.

    ``model`` is the UNWRAPPED ``Wav2Vec2ForPreTraining`` (for frame lengths and the Gumbel
    temperature; the loop calls the prepared one). The loss is fairseq's normalised by the
    number of masked frames: ``L_m / M + alpha (G V - perplexity) / (G V)``.
    """

    def __init__(self, model: Wav2Vec2ForPreTraining, cfg: MaskingConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.temperature = gumbel_temperature(0, cfg)
        self.num_codevectors = int(
            model.config.num_codevectors_per_group * model.config.num_codevector_groups
        )
        model.set_gumbel_temperature(self.temperature)  # type: ignore[arg-type]

    def on_step(self, step: int) -> None:
        self.temperature = gumbel_temperature(step, self.cfg)
        self.model.set_gumbel_temperature(self.temperature)  # type: ignore[arg-type]

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples -> (B,) frames of the conv front end."""
        out = self.model._get_feat_extract_output_lengths(lengths)  # type: ignore[arg-type]
        return torch.as_tensor(out).long()

    def outputs(self, model: nn.Module, batch: AudioBatch) -> tuple[Any, torch.Tensor]:
        """Forward with freshly drawn masks and distractors; returns (output, (B, T) mask)."""
        frames = self.frame_lengths(batch.lengths)
        num_frames = int(self.frame_lengths(torch.tensor([batch.input_values.shape[1]]))[0])
        mask_np, negatives_np = sample_masks(
            frames, num_frames, int(self.model.config.num_negatives), self.cfg
        )
        device = batch.input_values.device
        mask = torch.from_numpy(mask_np).to(device)
        out = model(
            batch.input_values,
            attention_mask=batch.attention_mask,
            mask_time_indices=mask,
            sampled_negative_indices=torch.from_numpy(negatives_np).long().to(device),
        )
        return out, mask

    def loss(self, model: nn.Module, batch: AudioBatch) -> LossOutput:
        out, mask = self.outputs(model, batch)
        masked = mask.sum().clamp(min=1).float()
        contrastive = out.contrastive_loss.float() / masked
        diversity = (self.num_codevectors - out.codevector_perplexity.float()) / (
            self.num_codevectors
        )
        loss = contrastive + self.cfg.diversity_weight * diversity
        metrics = {
            "contrastive": float(contrastive.detach()),
            "diversity": float(diversity.detach()),
            "perplexity": float(out.codevector_perplexity.detach()),
            "temperature": self.temperature,
            "masked": float(masked) / float(self.frame_lengths(batch.lengths).sum()),
        }
        return LossOutput(loss, len(batch), metrics)

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Mean contrastive loss per masked frame, diversity loss and code perplexity on dev
        (hard code choice, as in eval mode)."""
        sums = {"val_contrastive": 0.0, "val_diversity": 0.0, "val_perplexity": 0.0}
        batches = 0
        device = next(model.parameters()).device
        for batch in loader:
            out = self.loss(model, batch.to(device))
            sums["val_contrastive"] += out.metrics["contrastive"]
            sums["val_diversity"] += out.metrics["diversity"]
            sums["val_perplexity"] += out.metrics["perplexity"]
            batches += 1
        return {k: v / max(batches, 1) for k, v in sums.items()}

    def batch_seconds(self, batch: AudioBatch) -> float:
        return float(batch.lengths.sum()) / SAMPLE_RATE

    def batch_padding(self, batch: AudioBatch) -> float:
        return batch.padding_fraction
