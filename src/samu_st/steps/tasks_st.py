"""Step 3 as a training task: batches, the trainable wrapper, the loss and dev validation.

- :class:`STCollator` turns decoded utterances into an :class:`STBatch`: padded audio
  (:func:`~samu_st.data.collate.collate_audio`) plus teacher-forcing tensors
  ``[prefix…, y…]`` (:func:`make_decoder_targets`, the prefix of ``model.decoder.prefix``:
  the one the model is decoded with, :func:`~samu_st.models.translator.decoder_prefix_mode`)
  and, for the optional
  auxiliary CTC loss, character labels of the normalised SOURCE transcript.
- :class:`STModel` wraps the transformers ``SpeechEncoderDecoderModel`` and the optional CTC
  head; its ``forward`` returns tensors only.
- :class:`STTask` computes the label-smoothed cross-entropy
  (:func:`~samu_st.losses.label_smoothed_nll_loss`), optionally interpolated with CTC
  (``(1 - w)·CE + w·CTC``, ESPnet's hybrid rule), and validates on dev (loss, and greedy BLEU
  on a fixed, evenly spread subset of dev utterances).

The auxiliary CTC loss is OUR deviation from the paper (off by default): an encoder trained
from scratch on a CPU learns alignments from CTC long before an attention decoder can use it
(DESIGN.md §6). Its head reads the encoder states after the bottleneck adapters and before the
length adaptor, and it is trained and checkpointed with the model but dropped at export:
inference does not need it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from transformers import SpeechEncoderDecoderModel, Wav2Vec2Model

from samu_st.audio import SAMPLE_RATE
from samu_st.data.collate import AudioBatch, collate_audio
from samu_st.decoding.translate import generate_batch
from samu_st.losses import ctc_loss, label_smoothed_nll_loss
from samu_st.metrics import corpus_bleu
from samu_st.models.front_end_cache import FrontEndCache, serve_front_end
from samu_st.models.tokenizer import PrefixMode, TargetTokenizer, make_decoder_targets
from samu_st.text import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, Normalizer
from samu_st.training.config import OptimConfig
from samu_st.training.schedule import ParamGroup
from samu_st.training.task import LossOutput, TaskBase


@dataclass(frozen=True)
class STBatch:
    """A speech translation micro-batch; every padded tensor comes with its mask or lengths."""

    audio: AudioBatch  # waveforms (B, S) with lengths (B,) and mask (B, S)
    decoder_input_ids: torch.Tensor  # (B, L) [prefix (P), y1 … y(n-1)], pad id after
    labels: torch.Tensor  # (B, L) [-100 (P-1 times), y1 … yn, </s>], -100 after
    decoder_mask: torch.Tensor  # (B, L) bool, True on real decoder inputs
    ctc_labels: torch.Tensor | None = None  # (B, C) source characters, 0 after
    ctc_label_lengths: torch.Tensor | None = None  # (B,) characters per row

    def __len__(self) -> int:
        return len(self.audio)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> STBatch:
        """The batch with every tensor moved to ``device``."""
        moved: dict[str, Any] = {"audio": self.audio.to(device, non_blocking)}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=non_blocking)
        return replace(self, **moved)


class CharEncoder:
    """Source transcript → CTC character ids, after a normaliser (``" "`` → ``|``)."""

    def __init__(self, vocab: Mapping[str, int], normalizer: Normalizer) -> None:
        self.vocab = dict(vocab)
        self.normalizer = normalizer
        self.unk = self.vocab[UNK_TOKEN]
        self.blank = self.vocab[PAD_TOKEN]  # the CTC blank, as in Wav2Vec2ForCTC

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        chars = (WORD_DELIMITER if c == " " else c for c in self.normalizer(text))
        return [self.vocab.get(c, self.unk) for c in chars]


class STCollator:
    """Collate ``SpeechItem`` mappings into an :class:`STBatch` (picklable: DataLoader workers).

    ``max_target_length`` is the decoder's number of positions: longer targets are cut,
    keeping ``</s>``. With ``chars``, CTC labels of the source transcript are added.
    ``prefix``: the decoder prefix mode (:func:`~samu_st.models.tokenizer.decoder_prefix`).
    """

    def __init__(
        self,
        tokenizer: TargetTokenizer,
        max_target_length: int | None = None,
        chars: CharEncoder | None = None,
        prefix: PrefixMode = "source",
    ) -> None:
        self.tokenizer = tokenizer
        self.max_target_length = max_target_length
        self.chars = chars
        self.prefix: PrefixMode = prefix

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> STBatch:
        audio = collate_audio(items)
        targets = make_decoder_targets(
            self.tokenizer, audio.target_texts, audio.languages, self.max_target_length, self.prefix
        )
        ctc_labels = ctc_lengths = None
        if self.chars is not None:
            rows = [self.chars.encode(text) for text in audio.source_texts]
            ctc_lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
            ctc_labels = torch.zeros(len(rows), max(1, int(ctc_lengths.max())), dtype=torch.long)
            for i, row in enumerate(rows):
                ctc_labels[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return STBatch(
            audio, targets.input_ids, targets.labels, targets.mask, ctc_labels, ctc_lengths
        )


class STOutput(NamedTuple):
    """What :class:`STModel` returns."""

    # (B, L, V) decoder outputs; (1, N, V) with a ``label_mask``: its N positions, row-major
    logits: torch.Tensor
    ctc_logits: torch.Tensor | None  # (B, T, C) per encoder frame (before the length adaptor)
    ctc_lengths: torch.Tensor | None  # (B,) valid frames of ``ctc_logits``


class STModel(nn.Module):
    """The translator being trained, plus the optional auxiliary CTC head.

    Args:
        translator: the ``SpeechEncoderDecoderModel`` of :mod:`samu_st.models.translator`.
        ctc_classes: size of the CTC character vocabulary; 0 = no CTC head.
    """

    def __init__(
        self,
        translator: SpeechEncoderDecoderModel,
        ctc_classes: int = 0,
        front_end_cache: FrontEndCache | None = None,
    ) -> None:
        super().__init__()
        self.translator = translator
        # outputs of the frozen conv stack per clip, served in training (never saved)
        self.front_end_cache = front_end_cache
        self.ctc_head: nn.Linear | None = None
        self._states: torch.Tensor | None = None
        self._capture = False  # only forward() keeps the states, generate() does not
        if ctc_classes > 0:
            encoder = self.speech_encoder
            self.ctc_head = nn.Linear(int(encoder.config.hidden_size), ctc_classes)
            # The transformer stack's output is the state after the adapters and before the
            # length adaptor; a hook reads it without copying any modeling code.
            # (the wrapped families expose that state as `states_out`)
            stack = getattr(encoder, "states_out", None)
            target = stack if isinstance(stack, nn.Module) else encoder.encoder
            target.register_forward_hook(self._keep_states)

    @property
    def speech_encoder(self) -> Wav2Vec2Model:
        return cast(Wav2Vec2Model, self.translator.encoder)

    def _keep_states(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._capture:
            self._states = output if isinstance(output, torch.Tensor) else output[0]

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor,
        label_mask: torch.Tensor | None = None,
    ) -> STOutput:
        """``input_values`` (B, S) with ``attention_mask`` (B, S); decoder inputs (B, L) with
        their mask (B, L) → :class:`STOutput`.

        ``label_mask`` (B, L), true where a label is scored: the output projection then runs
        on those positions only and ``logits`` is (1, N, V), the N positions in row-major
        order (``labels[label_mask][None]`` are their targets). Prefix and padding positions
        (~30 % of a mini-CoVoST batch, more with long targets) are never projected onto the
        vocabulary, forward or backward.
        """
        self._states, self._capture = None, self.ctc_head is not None
        samples = attention_mask.sum(-1).long()
        packing = None
        if label_mask is not None:
            keep = label_mask

            def pack(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                return (args[0][keep].unsqueeze(0), *args[1:])

            head = cast(nn.Module, self.translator.decoder.get_output_embeddings())
            packing = head.register_forward_pre_hook(pack)
        try:
            with serve_front_end(self.front_end_cache, self.speech_encoder, input_values, samples):
                out = self.translator(
                    inputs=input_values,
                    attention_mask=attention_mask,
                    decoder_input_ids=decoder_input_ids,
                    decoder_attention_mask=decoder_attention_mask.long(),
                    use_cache=False,
                )
        finally:
            self._capture = False
            if packing is not None:
                packing.remove()
        if self.ctc_head is None:
            return STOutput(out.logits, None, None)
        states, self._states = self._states, None
        if states is None:
            raise RuntimeError("the encoder hook did not see the transformer output")
        frames = self.speech_encoder._get_feat_extract_output_lengths(
            cast(torch.LongTensor, samples), add_adapter=False
        )
        return STOutput(out.logits, self.ctc_head(states), frames.long())


def _module_params(modules: Iterable[nn.Module | None]) -> list[nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters()]


class STTask(TaskBase):
    """Teacher-forced translation loss, optional auxiliary CTC, dev validation.

    Args:
        tokenizer: the target tokenizer (for decoding in validation).
        label_smoothing: epsilon of the smoothed cross-entropy (our default 0.1, the value
            of fairseq's speech-to-text recipes; the paper does not give one).
        aux_ctc_weight: w in ``(1 - w)·CE + w·CTC``; 0 = no CTC.
        ctc_blank: id of the CTC blank in the character vocabulary.
        bleu_indices: dev dataset positions decoded greedily for the validation BLEU.
        max_new_tokens: generation cap in validation.
    """

    def __init__(
        self,
        tokenizer: TargetTokenizer,
        label_smoothing: float = 0.1,
        aux_ctc_weight: float = 0.0,
        ctc_blank: int = 0,
        bleu_indices: Iterable[int] = (),
        max_new_tokens: int = 64,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= aux_ctc_weight < 1.0:
            raise ValueError(f"aux_ctc_weight must be in [0, 1), got {aux_ctc_weight}")
        self.tokenizer = tokenizer
        self.label_smoothing = label_smoothing
        self.aux_ctc_weight = aux_ctc_weight
        self.ctc_blank = ctc_blank
        self.bleu_indices = frozenset(int(i) for i in bleu_indices)
        self.max_new_tokens = max_new_tokens

    def _forward(self, model: nn.Module, batch: STBatch) -> tuple[STOutput, torch.Tensor]:
        """The model's output with logits at the label positions only, and their targets
        (1, N)."""
        scored = batch.labels != -100
        out: STOutput = model(
            batch.audio.input_values,
            batch.audio.attention_mask,
            batch.decoder_input_ids,
            batch.decoder_mask,
            scored,
        )
        return out, batch.labels[scored].unsqueeze(0)

    def _ctc(self, out: STOutput, batch: STBatch) -> torch.Tensor | None:
        if self.aux_ctc_weight == 0.0 or out.ctc_logits is None:
            return None
        if batch.ctc_labels is None or batch.ctc_label_lengths is None or out.ctc_lengths is None:
            raise ValueError("aux_ctc_weight > 0 needs CTC labels in the batch and a CTC head")
        log_probs = torch.log_softmax(out.ctc_logits.float(), dim=-1)
        return ctc_loss(
            log_probs, out.ctc_lengths, batch.ctc_labels, batch.ctc_label_lengths, self.ctc_blank
        )

    def loss(self, model: nn.Module, batch: STBatch) -> LossOutput:
        out, targets = self._forward(model, batch)
        loss, nll = label_smoothed_nll_loss(out.logits, targets, self.label_smoothing)
        tokens = int(targets.shape[1])
        metrics = {"nll": float(nll.detach())}
        ctc = self._ctc(out, batch)
        if ctc is not None:
            metrics["ctc"] = float(ctc.detach())
            loss = (1.0 - self.aux_ctc_weight) * loss + self.aux_ctc_weight * ctc
        return LossOutput(loss, tokens, metrics)

    def param_groups(self, model: nn.Module, cfg: OptimConfig) -> list[ParamGroup]:
        """Groups by part (all at the peak LR ``cfg.lr``), so the log names what trains."""
        del cfg
        st = cast(STModel, model)
        encoder = st.speech_encoder
        adaptor = [encoder.adapter, getattr(st.translator, "enc_to_dec_proj", None)]
        adaptor_ids = {id(p) for p in _module_params(adaptor)}
        groups = [
            {
                "name": "encoder",
                "params": [p for p in encoder.parameters() if id(p) not in adaptor_ids],
            },
            {"name": "adaptor", "params": _module_params(adaptor)},
            {"name": "decoder", "params": list(st.translator.decoder.parameters())},
        ]
        if st.ctc_head is not None:
            groups.append({"name": "ctc_head", "params": list(st.ctc_head.parameters())})
        return groups

    def batch_seconds(self, batch: STBatch) -> float:
        return float(batch.audio.lengths.sum()) / SAMPLE_RATE

    def batch_padding(self, batch: STBatch) -> float:
        return batch.audio.padding_fraction

    def validate(self, model: nn.Module, loader: Iterable[STBatch]) -> dict[str, float]:
        """Dev loss, NLL per token, CTC loss (if on) and greedy BLEU on ``bleu_indices``."""
        st = cast(STModel, model)
        device = next(st.parameters()).device
        sums = {"loss": 0.0, "nll": 0.0, "ctc": 0.0}
        tokens = batches = 0
        hyps: list[str] = []
        refs: list[str] = []
        for cpu_batch in loader:
            batch = cpu_batch.to(device)
            out, targets = self._forward(st, batch)
            loss, nll = label_smoothed_nll_loss(
                out.logits, targets, self.label_smoothing, reduction="sum"
            )
            sums["loss"] += float(loss)
            sums["nll"] += float(nll)
            tokens += int(targets.shape[1])
            ctc = self._ctc(out, batch)
            if ctc is not None:
                sums["ctc"] += float(ctc)
                batches += 1
            new_hyps, new_refs = self._bleu_rows(st, batch)
            hyps += new_hyps
            refs += new_refs
        metrics = {
            "val_loss": sums["loss"] / max(tokens, 1),
            "val_nll": sums["nll"] / max(tokens, 1),
        }
        if batches:
            metrics["val_ctc"] = sums["ctc"] / batches
        if refs:
            metrics["val_bleu"] = corpus_bleu(hyps, refs).score
            metrics["val_bleu_utterances"] = float(len(refs))
        return metrics

    def _bleu_rows(self, model: STModel, batch: STBatch) -> tuple[list[str], list[str]]:
        rows = [i for i, index in enumerate(batch.audio.indices) if index in self.bleu_indices]
        if not rows:
            return [], []
        audio = batch.audio
        picked = torch.tensor(rows, device=audio.input_values.device)
        lengths = audio.lengths[picked]
        width = int(lengths.max())
        hyps = generate_batch(
            model.translator,
            self.tokenizer,
            audio.input_values[picked, :width],
            lengths,
            [audio.languages[i] for i in rows],
            num_beams=1,
            max_new_tokens=self.max_new_tokens,
        )
        return hyps, [audio.target_texts[i] for i in rows]


def even_subset(n: int, k: int) -> list[int]:
    """``k`` positions spread evenly over ``range(n)`` (all of them when ``k >= n``)."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    step = n / k
    return sorted({int(i * step) for i in range(k)})
