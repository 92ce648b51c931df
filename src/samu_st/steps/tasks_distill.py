"""Step 2 task: SAMU-XLS-R semantic distillation (cosine distance to frozen teacher embeddings).

The teacher's embeddings are computed before training (:mod:`samu_st.steps.distill`) into a
table of the DISTINCT texts, (U, D); each utterance knows its row. The collator looks the rows
up, so the loop never runs the teacher. Validation reports the cosine loss and speech→text
retrieval recall@1 against the dev set's distinct texts.

Optional (our deviation from the paper, off by default): an auxiliary CTC loss on the source
transcript through a linear head on the encoder frames (DESIGN.md §6: an encoder trained from
scratch may need an alignment-friendly signal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
from torch import nn

from samu_st.audio import SAMPLE_RATE
from samu_st.data.collate import AudioBatch, collate_audio
from samu_st.losses import cosine_distance_loss, ctc_loss
from samu_st.models.front_end_cache import FrontEndCache, serve_front_end
from samu_st.models.samu import SamuModel
from samu_st.training.config import OptimConfig
from samu_st.training.schedule import ParamGroup
from samu_st.training.task import LossOutput, TaskBase


class DistillOutput(NamedTuple):
    """What :class:`DistillModel` returns."""

    embedding: torch.Tensor  # (B, D_teacher) utterance embeddings
    ctc_logits: torch.Tensor | None  # (B, T, V) auxiliary CTC logits, or None without the head
    frame_lengths: torch.Tensor  # (B,) valid encoder frames


class DistillModel(nn.Module):
    """A :class:`SamuModel` plus the optional auxiliary CTC head (Linear D -> V on the frames).

    Only ``samu`` is exported; the CTC head is a training aid.
    """

    def __init__(
        self,
        samu: SamuModel,
        ctc_vocab_size: int = 0,
        front_end_cache: FrontEndCache | None = None,
    ) -> None:
        super().__init__()
        self.samu = samu
        # outputs of the frozen conv stack per clip, served in training (never saved)
        self.front_end_cache = front_end_cache
        self.ctc_head: nn.Linear | None = None
        if ctc_vocab_size > 0:
            self.ctc_head = nn.Linear(samu.encoder.hidden_size, ctc_vocab_size)

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor) -> DistillOutput:
        """(B, S) waveforms with (B,) sample lengths -> :class:`DistillOutput`."""
        samu = self.samu
        with serve_front_end(self.front_end_cache, samu.encoder.model, input_values, lengths):
            encoded = samu.encoder(input_values, lengths)
        embedding = samu.projection(samu.pooling(encoded.hidden, encoded.mask))
        logits = self.ctc_head(encoded.hidden) if self.ctc_head is not None else None
        return DistillOutput(embedding, logits, encoded.lengths)


@dataclass(frozen=True)
class DistillBatch:
    """Padded audio with each utterance's teacher embedding (and optional CTC labels)."""

    audio: AudioBatch
    teacher: torch.Tensor  # (B, D) teacher embedding of each utterance's text
    text_rows: torch.Tensor  # (B,) long, row of each utterance's text in the teacher table
    labels: torch.Tensor | None = None  # (B, L) long CTC labels, 0-padded
    label_lengths: torch.Tensor | None = None  # (B,) long

    def __len__(self) -> int:
        return len(self.audio)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> DistillBatch:
        moved: dict[str, Any] = {"audio": self.audio.to(device, non_blocking)}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=non_blocking)
        return replace(self, **moved)


class DistillCollator:
    """Items of a ``SpeechDataset`` -> :class:`DistillBatch`, by table look-up.

    Args:
        table: (U, D) teacher embeddings of the distinct texts.
        rows: (N,) long, the table row of dataset item ``i``'s text.
        labels: per dataset item, CTC label ids of its source transcript (aux CTC only).
    """

    def __init__(
        self,
        table: torch.Tensor,
        rows: torch.Tensor,
        labels: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.table, self.rows, self.labels = table, rows, labels

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> DistillBatch:
        audio = collate_audio(items)
        index = torch.tensor(audio.indices, dtype=torch.long)
        rows = self.rows[index]
        batch = DistillBatch(audio, self.table[rows], rows)
        if self.labels is None:
            return batch
        seqs = [self.labels[i] for i in audio.indices]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        padded = torch.zeros(len(seqs), max(1, int(lengths.max())), dtype=torch.long)
        for i, seq in enumerate(seqs):
            padded[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return replace(batch, labels=padded, label_lengths=lengths)


def recall_at_1(speech: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor) -> float:
    """Speech→text retrieval recall@1 over DISTINCT candidate texts, by cosine similarity.

    ``speech`` (N, D), ``candidates`` (U, D) (one row per distinct text), ``targets`` (N,) the
    row of each utterance's own text. Several utterances may share a text (and so a target
    row); each is a hit when its nearest candidate is that row. Chance is 1/U. (This differs
    from ``metrics.retrieval_recall_at_1``, which pairs row i with row i and so would count
    a retrieved duplicate of the right text as a miss.)
    """
    s = nn.functional.normalize(speech.float(), dim=-1)
    c = nn.functional.normalize(candidates.float().to(s.device), dim=-1)
    best = (s @ c.T).argmax(dim=-1)
    return int((best == targets.to(best.device)).sum()) / len(best)


class DistillTask(TaskBase):
    """Cosine distance to the teacher (+ optional weighted CTC) per :class:`DistillBatch`.

    Args:
        head_lr: peak LR of the pooling + projection (and CTC) head; the encoder uses the
            optimiser's ``lr``.
        aux_ctc_weight: weight of the auxiliary CTC loss (0: pure SAMU, the paper).
        blank: CTC blank id (the vocabulary's ``[PAD]``).
        val_candidates: (U_dev, D) teacher embeddings of the distinct dev texts.
    """

    def __init__(
        self,
        head_lr: float,
        aux_ctc_weight: float = 0.0,
        blank: int = 0,
        val_candidates: torch.Tensor | None = None,
    ) -> None:
        self.head_lr = head_lr
        self.aux_ctc_weight = aux_ctc_weight
        self.blank = blank
        self.val_candidates = val_candidates

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
        assert isinstance(model, DistillModel)
        groups = model.samu.parameter_groups()
        result: list[ParamGroup] = [
            {"name": "encoder", "params": groups["encoder"], "lr": cfg.lr},
            {"name": "head", "params": groups["head"], "lr": self.head_lr},
        ]
        if model.ctc_head is not None:
            ctc = list(model.ctc_head.parameters())
            result.append({"name": "ctc_head", "params": ctc, "lr": self.head_lr})
        return result

    def _ctc(self, out: DistillOutput, batch: DistillBatch) -> torch.Tensor:
        assert out.ctc_logits is not None and batch.labels is not None
        assert batch.label_lengths is not None
        log_probs = torch.log_softmax(out.ctc_logits.float(), dim=-1)
        return ctc_loss(log_probs, out.frame_lengths, batch.labels, batch.label_lengths,
                        blank=self.blank)  # fmt: skip

    def loss(self, model: nn.Module, batch: DistillBatch) -> LossOutput:
        out: DistillOutput = model(batch.audio.input_values, batch.audio.lengths)
        cosine = cosine_distance_loss(out.embedding, batch.teacher)
        metrics = {"cosine": float(cosine.detach())}
        loss = cosine
        if self.aux_ctc_weight > 0 and out.ctc_logits is not None:
            ctc = self._ctc(out, batch)
            loss = cosine + self.aux_ctc_weight * ctc
            metrics["ctc"] = float(ctc.detach())
        return LossOutput(loss, len(batch), metrics)

    def validate(self, model: nn.Module, loader: Any) -> dict[str, float]:
        """Dev cosine loss and R@1 over the distinct dev texts (chance = 1/U)."""
        device = next(model.parameters()).device
        speech, teacher, rows = [], [], []
        for batch in loader:
            batch = batch.to(device)
            speech.append(model(batch.audio.input_values, batch.audio.lengths).embedding.float())
            teacher.append(batch.teacher.float())
            rows.append(batch.text_rows)
        s, t, r = torch.cat(speech), torch.cat(teacher), torch.cat(rows)
        result = {"val_cosine": float(cosine_distance_loss(s, t))}
        if self.val_candidates is not None:
            result["val_r1"] = recall_at_1(s, self.val_candidates, r)
            result["val_r1_chance"] = 1.0 / len(self.val_candidates)
        return result

    def batch_seconds(self, batch: DistillBatch) -> float:
        return float(batch.audio.lengths.sum()) / SAMPLE_RATE

    def batch_padding(self, batch: DistillBatch) -> float:
        return batch.audio.padding_fraction
