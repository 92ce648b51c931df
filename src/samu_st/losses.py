"""Loss functions: pure, vectorised over the batch, no model state.

- :func:`cosine_distance_loss` — SAMU-XLS-R distillation: mean of ``1 - cos(speech, text)``;
- :func:`ctc_loss` — batch-first wrapper of ``torch.nn.functional.ctc_loss`` in float32;
- :func:`label_smoothed_nll_loss` — token-level cross-entropy with label smoothing and ``-100``
  padding, for the translation decoder.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: Target value that marks padding in decoder targets (the transformers convention).
IGNORE_INDEX = -100


def cosine_distance_loss(
    speech: torch.Tensor, text: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Mean cosine distance ``1 - cos(speech_i, text_i)`` over the batch.

    Args:
        speech: (B, D) speech embeddings.
        text: (B, D) teacher text embeddings (no gradient needed).
        eps: guards the division for zero vectors.

    Returns:
        A scalar in [0, 2], computed in float32.
    """
    if speech.shape != text.shape or speech.dim() != 2:
        raise ValueError(
            f"expected two (B, D) tensors, got {tuple(speech.shape)} and {tuple(text.shape)}"
        )
    cosine = F.cosine_similarity(speech.float(), text.float(), dim=-1, eps=eps)
    return (1.0 - cosine).mean()


def ctc_loss(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    labels: torch.Tensor,
    label_lengths: torch.Tensor,
    blank: int = 0,
    zero_infinity: bool = True,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """CTC loss of batch-first log-probabilities.

    Args:
        log_probs: (B, T, V) log-softmax outputs (any float dtype; computed in float32).
        lengths: (B,) valid frames per utterance.
        labels: (B, L) label ids, right-padded with anything (only ``label_lengths`` count).
        label_lengths: (B,) labels per utterance.
        blank: id of the CTC blank (the pad token of a Wav2Vec2CTCTokenizer).
        zero_infinity: impossible alignments (labels longer than the frames allow) give 0
            loss and 0 gradient instead of ``inf``.
        reduction: ``mean`` divides each loss by its label length, then averages over the
            batch (torch's convention); ``sum``; or ``none`` for (B,).
    """
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),
        labels,
        lengths,
        label_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )


def label_smoothed_nll_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 0.0,
    reduction: Literal["mean", "sum"] = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed cross-entropy over the non-padded target tokens.

    The smoothed target puts ``1 - epsilon`` on the reference token and ``epsilon / V`` on
    every token (``torch.nn.functional.cross_entropy(label_smoothing=epsilon)``):
    ``loss = (1 - epsilon) * nll + epsilon * mean_v(-log p_v)``.

    Args:
        logits: (B, L, V) decoder outputs (computed in float32).
        targets: (B, L) token ids, ``-100`` on padding.
        epsilon: label smoothing in [0, 1).
        reduction: ``mean`` per non-padded token, or ``sum``.

    Returns:
        ``(loss, nll)``: the smoothed loss to optimise and the plain negative log-likelihood
        (for perplexity), both reduced the same way.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}"
        )
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    valid = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~valid, 0)
    nll = -log_probs.gather(-1, safe_targets[..., None]).squeeze(-1)
    smooth = -log_probs.mean(dim=-1)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    loss_sum = torch.where(valid, loss, zero).sum()
    nll_sum = torch.where(valid, nll, zero).sum()
    if reduction == "sum":
        return loss_sum, nll_sum
    count = valid.sum().clamp(min=1)
    return loss_sum / count, nll_sum / count
