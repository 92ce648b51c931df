"""CTC fine-tuning as a training task: labels, the label-length filter, the collator, the loss
and a real WER on dev.

Two defects of the XLSR fine-tuning notebook are fixed here at their cause:

- ``inf`` training loss: CTC can only align ``L`` labels to ``T`` frames if ``T >= L + R``, where
  ``R`` counts adjacent repeated labels (a blank must separate them). Utterances that fail this
  for the encoder's output length are removed before training and counted
  (:func:`filter_feasible`); ``zero_infinity`` stays on as a guard, and every batch reports how
  many of its rows were still infeasible (``ctc_infeasible``, which must stay 0).
- WER above 1 while the loss falls: the notebook decoded its *reference label ids* with token
  grouping, which merges doubled letters (``ll`` → ``l``), and compared against that. Here
  references are the normalised transcripts themselves (strings), and hypotheses are greedy
  CTC decodes, so the WER is a real one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import Wav2Vec2CTCTokenizer

from samu_st.audio import SAMPLE_RATE
from samu_st.data.collate import AudioBatch, collate_audio
from samu_st.decoding.ctc import CtcTokenizer, ctc_greedy_decode
from samu_st.losses import IGNORE_INDEX, ctc_loss
from samu_st.metrics import cer, wer
from samu_st.training.task import LossOutput, TaskBase

MAX_EXAMPLES = 5  # filtered utterances quoted per reason in a report


def encode_labels(texts: Sequence[str], tokenizer: Wav2Vec2CTCTokenizer) -> list[list[int]]:
    """Label ids of (already normalised) ``texts``: one id per character, ``|`` for a space,
    ``[UNK]`` for a character outside the vocabulary (what ``Wav2Vec2CTCTokenizer`` does)."""
    return [list(tokenizer(text)["input_ids"]) for text in texts]


def min_ctc_frames(ids: Sequence[int]) -> int:
    """The fewest frames CTC can align ``ids`` to: one per label plus one blank between each
    pair of equal adjacent labels (``"ll"`` needs 3 frames: l, blank, l)."""
    repeats = sum(1 for a, b in itertools.pairwise(ids) if a == b)
    return len(ids) + repeats


def output_frames(
    samples: torch.Tensor, conv_kernel: Sequence[int], conv_stride: Sequence[int]
) -> torch.Tensor:
    """(B,) input lengths in samples → (B,) encoder output frames (the conv stack's formula,
    the same as ``Wav2Vec2Model._get_feat_extract_output_lengths``)."""
    frames = samples.to(torch.long)
    for kernel, stride in zip(conv_kernel, conv_stride, strict=True):
        frames = torch.div(frames - kernel, stride, rounding_mode="floor") + 1
    return frames.clamp(min=0)


@dataclass
class LabelFilterReport:
    """What :func:`filter_feasible` kept and dropped, written as JSON next to the run."""

    split: str
    total: int = 0
    kept: int = 0
    label_too_long: int = 0  # labels need more frames than the encoder outputs (CTC inf)
    empty_label: int = 0  # nothing left after normalisation
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> "id: why"

    def drop(self, reason: str, detail: str) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        quoted = self.examples.setdefault(reason, [])
        if len(quoted) < MAX_EXAMPLES:
            quoted.append(detail)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def filter_feasible(
    ids: Sequence[str],
    durations: Sequence[float],
    labels: Sequence[Sequence[int]],
    frames_of: Any,
    *,
    split: str,
    sample_rate: int = SAMPLE_RATE,
    max_speed: float = 1.0,
) -> tuple[list[int], LabelFilterReport]:
    """Positions of the utterances CTC can learn from, and a report of the others.

    ``frames_of``: (B,) samples → (B,) frames (e.g. ``output_frames`` with the model's conv
    geometry). A clip is judged at its shortest, after the fastest speed perturbation
    ``max_speed``, and its sample count is rounded down, so a kept clip is feasible under
    every perturbation the sampler can draw.
    """
    report = LabelFilterReport(split=split, total=len(ids))
    samples = torch.tensor(
        [math.floor(d * sample_rate / max_speed) for d in durations], dtype=torch.long
    )
    frames = frames_of(samples).tolist() if len(ids) else []
    keep: list[int] = []
    for i, (uid, label, n_frames) in enumerate(zip(ids, labels, frames, strict=True)):
        need = min_ctc_frames(label)
        if not label:
            report.drop("empty_label", f"{uid}: empty transcript after normalisation")
        elif n_frames < need:
            detail = f"{uid}: {need} frames needed for {len(label)} labels, {n_frames} available"
            report.drop("label_too_long", detail)
        else:
            keep.append(i)
    report.kept = len(keep)
    return keep, report


@dataclass(frozen=True)
class CtcBatch:
    """Padded audio with its CTC labels and normalised reference transcripts."""

    audio: AudioBatch  # input_values (B, S), lengths (B,), attention_mask (B, S)
    labels: torch.Tensor  # (B, L) int64 label ids, IGNORE_INDEX (-100) after label_lengths
    label_lengths: torch.Tensor  # (B,) int64
    min_frames: torch.Tensor  # (B,) int64, frames each label sequence needs (min_ctc_frames)
    references: list[str]  # normalised transcripts (what WER is computed against)

    def __len__(self) -> int:
        return len(self.references)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CtcBatch:
        """The batch with every tensor on ``device``."""
        return replace(
            self,
            audio=self.audio.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
            label_lengths=self.label_lengths.to(device, non_blocking=non_blocking),
            min_frames=self.min_frames.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> CtcBatch:
        return replace(
            self,
            audio=self.audio.pin_memory(),
            labels=self.labels.pin_memory(),
            label_lengths=self.label_lengths.pin_memory(),
            min_frames=self.min_frames.pin_memory(),
        )


class CtcCollator:
    """Collates ``SpeechItem``s into a :class:`CtcBatch`; labels are looked up by dataset index.

    labels: label ids per dataset index (see :func:`encode_labels`).
    references: normalised transcript per dataset index.
    """

    def __init__(
        self,
        labels: Sequence[Sequence[int]],
        references: Sequence[str],
        pad_to_multiple_of: int = 1,
    ) -> None:
        if len(labels) != len(references):
            raise ValueError("one label sequence and one reference per utterance")
        self.labels = [list(x) for x in labels]
        self.references = list(references)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[Any]) -> CtcBatch:
        audio = collate_audio(items, self.pad_to_multiple_of)
        rows = [self.labels[i] for i in audio.indices]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        labels = np.full((len(rows), max(1, int(lengths.max()))), IGNORE_INDEX, dtype=np.int64)
        for b, row in enumerate(rows):
            labels[b, : len(row)] = row
        return CtcBatch(
            audio=audio,
            labels=torch.from_numpy(labels),
            label_lengths=torch.from_numpy(lengths),
            min_frames=torch.tensor([min_ctc_frames(r) for r in rows], dtype=torch.long),
            references=[self.references[i] for i in audio.indices],
        )


class CtcTask(TaskBase):
    """CTC loss of a ``Wav2Vec2ForCTC`` (called for logits only; the loss is computed here),
    and greedy-decoding WER/CER on dev.

    tokenizer: the ``Wav2Vec2CTCTokenizer`` (its pad id is the blank).
    conv_kernel, conv_stride: the encoder's conv geometry (``model.config``), for output lengths.
    frames: instead, a function from (B,) samples to (B,) output frames (the encoder families
        whose front end is no conv stack, :mod:`samu_st.models.family_ctc`).
    """

    def __init__(
        self,
        tokenizer: Wav2Vec2CTCTokenizer,
        conv_kernel: Sequence[int],
        conv_stride: Sequence[int],
        *,
        frames: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token, which CTC uses as its blank")
        self.tokenizer = tokenizer
        # decoding.ctc.CtcTokenizer declares settable attributes that transformers exposes as
        # read-only properties, so mypy rejects the real class; it has every member.
        self._decode_tokenizer: CtcTokenizer = cast(CtcTokenizer, tokenizer)
        self.blank = int(tokenizer.pad_token_id)
        self.conv_kernel, self.conv_stride = tuple(conv_kernel), tuple(conv_stride)
        self.frames = frames

    def forward(self, model: nn.Module, batch: CtcBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and valid frames (B,) of a batch."""
        audio = batch.audio
        logits = model(audio.input_values, attention_mask=audio.attention_mask).logits
        if self.frames is not None:
            frames = self.frames(audio.lengths)
        else:
            frames = output_frames(audio.lengths, self.conv_kernel, self.conv_stride)
        return logits, frames.clamp(max=logits.shape[1])

    def _loss(self, logits: torch.Tensor, frames: torch.Tensor, batch: CtcBatch) -> torch.Tensor:
        labels = batch.labels.masked_fill(batch.labels < 0, self.blank)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return ctc_loss(log_probs, frames, labels, batch.label_lengths, blank=self.blank)

    def loss(self, model: nn.Module, batch: CtcBatch) -> LossOutput:
        logits, frames = self.forward(model, batch)
        infeasible = int((frames < batch.min_frames).sum())
        return LossOutput(
            self._loss(logits, frames, batch), len(batch), {"ctc_infeasible": float(infeasible)}
        )

    def batch_seconds(self, batch: CtcBatch) -> float:
        return float(batch.audio.lengths.sum()) / SAMPLE_RATE

    def batch_padding(self, batch: CtcBatch) -> float:
        return batch.audio.padding_fraction

    def transcribe_logits(self, logits: torch.Tensor, frames: torch.Tensor) -> list[str]:
        """Greedy transcripts of logits (B, T, V) with valid frames (B,)."""
        return ctc_greedy_decode(logits.float(), frames, self._decode_tokenizer)

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Dev loss, and WER/CER of greedy transcripts against the normalised references."""
        device = next(model.parameters()).device
        hyps: list[str] = []
        refs: list[str] = []
        loss_sum, rows = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            logits, frames = self.forward(model, batch)
            loss_sum += float(self._loss(logits, frames, batch).detach()) * len(batch)
            rows += len(batch)
            hyps += self.transcribe_logits(logits, frames)
            refs += batch.references
        if not rows:
            return {}
        exact = sum(h == r for h, r in zip(hyps, refs, strict=True)) / rows
        return {
            "loss": loss_sum / rows,
            "wer": wer(hyps, refs),
            "cer": cer(hyps, refs),
            "exact": exact,
            "utterances": float(rows),
        }
