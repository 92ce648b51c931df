"""Every encoder family behind the interface of ``Wav2Vec2Model``: waveforms in, frames out.

:class:`FamilySpeechModel` wraps the transformers model of a family
(:mod:`samu_st.models.encoder_families`) so that the rest of samu-st — :class:`SpeechEncoder`,
the translator inside ``SpeechEncoderDecoderModel``, the CTC model — sees one interface:
``forward(input_values (B, S), attention_mask (B, S))`` on normalised 16 kHz waveforms,
``_get_feat_extract_output_lengths`` and ``_get_feature_vector_attention_mask`` in samples,
and an optional :class:`~samu_st.models.length_adaptor.LengthAdaptor` in ``adapter``.
The wrapped model is ``self.model`` and its config is this model's config (so a
``SpeechEncoderDecoderModel`` records the family's own config, e.g. ``model_type: hubert``).

Input features, one clip at a time (a clip's features never depend on the batch):

- HuBERT / WavLM: the waveform itself (their conv front end).
- w2v-BERT: transformers' ``SeamlessM4TFeatureExtractor`` (80 Kaldi fbank bins, normalised per
  bin over the clip, two frames stacked: 160 values per 20 ms); frames = ⌊(1 + ⌊(S−400)/160⌋)/2⌋.
- Whisper: transformers' ``WhisperFeatureExtractor`` log-mel of the waveform scaled by
  :data:`WHISPER_INPUT_GAIN` (our batches are normalised to unit variance; Whisper's log-mel
  has an absolute offset, so the gain puts clips back at a typical recording level, −20 dBFS);
  frames = ⌈⌊S/160⌋/2⌉. Two ways to meet its 30-second window (``whisper_input``):

  * ``pad-30s`` (default): each clip is padded with silence to 30 s (3000 mel frames) exactly as
    in Whisper's pretraining and inference; ``WhisperEncoder.forward`` runs unchanged and its
    output is cut to the batch's longest clip. The encoder has no padding mask, but since every
    clip sees the same 30-s window whatever the batch, a clip alone and a clip in a batch give
    the same states. Cost: every clip costs 1500 positions whatever its length. Large-v2's
    encoder: 2.27 TFLOP per clip, against 0.13 TFLOP for a 2-s clip trimmed (17.7×), 0.33 for
    5 s (6.9×), 0.68 for 10 s (3.4×). Measured (base-size encoder, 6 × 512, random weights,
    batch 4, one CPU thread, 2026-12-05): 2-s clips 13.6 s padded vs 0.52 s trimmed (26×),
    5-s clips 12.0 s vs 1.4 s (8.4×); the log-mel itself is 0.1 s per batch of 4.
  * ``trim``: the mel input stops at the batch's longest clip; the layers are called one by one
    (transformers' ``WhisperEncoder.forward`` raises "Whisper expects the mel input features to
    be of length 3000" for anything else) with ``embed_positions``
    sliced to the frames present, frames after each clip zeroed before both convolutions and
    masked in self-attention, so outputs on valid frames are exactly padding-invariant and the
    cost follows the clip length. It deviates from pretraining (Whisper never saw a window that
    was not filled to 30 s), which adapters/fine-tuning have to absorb.

  Clips over 30 s are refused in both modes.

The fbank and log-mel are computed on the CPU (transformers' extractors work on numpy), one
clip at a time, inside ``forward``: on a GPU that is a copy of the batch to the host and back
per step, small next to the encoder (0.1 s for four 2-s clips padded to 30 s, above).
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn
from transformers import (
    PreTrainedModel,
    SeamlessM4TFeatureExtractor,
    WhisperFeatureExtractor,
)
from transformers.modeling_outputs import BaseModelOutput

from samu_st.models.encoder_families import Family, family_of_model_type

WhisperInput = Literal["pad-30s", "trim"]
#: Config attribute recording the Whisper window mode (saved in config.json).
WHISPER_INPUT_KEY = "samu_whisper_input"
#: Config attribute recording our length adaptor's layer count (never ``add_adapter``, which
#: would make w2v-BERT build its own adaptor).
LENGTH_ADAPTOR_KEY = "samu_length_adaptor_layers"
#: Gain from unit-variance waveforms to a typical recording level (−20 dBFS RMS) for Whisper.
WHISPER_INPUT_GAIN = 0.1
SAMPLE_RATE = 16000
_WHISPER_WINDOW = 30 * SAMPLE_RATE


class FamilySpeechModel(PreTrainedModel):
    """A family's transformers model with a waveform interface (see the module docstring).

    Args:
        model: the family's model (``HubertModel``, ``WavLMModel``, ``Wav2Vec2BertModel``,
            ``WhisperEncoder``), with or without bottleneck adapters.
    """

    main_input_name = "input_values"
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True  # (the wrapped model's attention decides; every family here has SDPA)

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model.config)
        family = family_of_model_type(getattr(model.config, "model_type", None))
        if family is None or family.name == "wav2vec2":
            raise TypeError(f"{type(model).__name__} is not a model of a wrapped encoder family")
        self.family: Family = family
        self.model = model
        self.adapter: nn.Module | None = None
        # The transformer's output, before the length adaptor: a hook point (auxiliary CTC).
        self.states_out = nn.Identity()
        self._extractor: Any = None
        if family.inputs == "fbank":
            self._extractor = SeamlessM4TFeatureExtractor(sampling_rate=SAMPLE_RATE)
        elif family.inputs == "log-mel":
            bins = int(model.config.num_mel_bins)
            self._extractor = WhisperFeatureExtractor(feature_size=bins)
            mode = getattr(model.config, WHISPER_INPUT_KEY, "pad-30s")
            if mode not in ("pad-30s", "trim"):
                raise ValueError(f"whisper_input must be pad-30s or trim, got {mode!r}")

    # -- lengths ------------------------------------------------------------------------

    @property
    def whisper_input(self) -> WhisperInput:
        return cast(WhisperInput, getattr(self.config, WHISPER_INPUT_KEY, "pad-30s"))

    @property
    def min_input_samples(self) -> int:
        """The shortest clip (samples) that gives one output frame."""
        if self.family.inputs == "fbank":
            return 400 + 160  # two 25-ms fbank frames make one stacked frame
        if self.family.inputs == "log-mel":
            # trim: each clip reaches the extractor unpadded, and its STFT reflect-pads by
            # n_fft // 2 = 200 samples, which needs more samples than that
            return 201
        samples = 1
        config: Any = self.config
        for kernel, stride in zip(
            reversed(config.conv_kernel), reversed(config.conv_stride), strict=True
        ):
            samples = (samples - 1) * stride + kernel
        return samples

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples → (B,) encoder frames (before any length adaptor), long."""
        lengths = lengths.to(torch.long)
        if self.family.inputs == "fbank":
            fbank = torch.div(lengths - 400, 160, rounding_mode="floor") + 1
            return torch.div(fbank.clamp(min=0), 2, rounding_mode="floor")
        if self.family.inputs == "log-mel":
            mel = torch.div(lengths, 160, rounding_mode="floor")
            return torch.div(mel + 1, 2, rounding_mode="floor")
        inner: Any = self.model
        return inner._get_feat_extract_output_lengths(lengths).to(torch.long)

    def _get_feat_extract_output_lengths(
        self, input_lengths: torch.Tensor | int, add_adapter: bool | None = None
    ) -> torch.Tensor:
        """(B,) samples → (B,) output frames, after the length adaptor unless
        ``add_adapter`` is False (the signature of ``Wav2Vec2Model``'s method)."""
        lengths = self.frame_lengths(torch.as_tensor(input_lengths))
        layers = int(getattr(self.config, LENGTH_ADAPTOR_KEY, 0) or 0)
        if add_adapter is False or self.adapter is None:
            return lengths
        for _ in range(layers):
            lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
        return lengths

    def _get_feature_vector_attention_mask(
        self,
        feature_vector_length: int,
        attention_mask: torch.Tensor,
        add_adapter: bool | None = None,
    ) -> torch.Tensor:
        """(B, S) sample mask → (B, T) bool frame mask (``Wav2Vec2Model``'s signature)."""
        lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1), add_adapter)
        positions = torch.arange(feature_vector_length, device=attention_mask.device)
        return positions[None, :] < lengths.to(attention_mask.device)[:, None]

    # -- forward --------------------------------------------------------------------------

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """(B, S) normalised waveforms, (B, S) sample mask → ``last_hidden_state`` (B, T, D)
        (after the length adaptor, if any) and, if asked, every layer's ``hidden_states``."""
        batch, samples = input_values.shape
        if attention_mask is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=input_values.device)
        else:
            lengths = attention_mask.sum(-1).to(torch.long)
        want_states = bool(output_hidden_states)
        if self.family.inputs == "waveform":
            out = self.model(
                input_values, attention_mask=attention_mask, output_hidden_states=want_states
            )
            hidden, states = out.last_hidden_state, out.hidden_states
        elif self.family.inputs == "fbank":
            features, mask = self._fbank(input_values, lengths)
            out = self.model(features, attention_mask=mask, output_hidden_states=want_states)
            hidden, states = out.last_hidden_state, out.hidden_states
        else:
            hidden, states = self._whisper(input_values, lengths, want_states)
        hidden = self.states_out(hidden)
        if self.adapter is not None:
            cast(Any, self.adapter).frame_lengths = self.frame_lengths(lengths)
            hidden = self.adapter(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=states)

    def _clips(self, input_values: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
        wav = input_values.detach().float().cpu().numpy()
        return [wav[i, : int(n)] for i, n in enumerate(lengths.tolist())]

    def _fbank(
        self, input_values: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """w2v-BERT features (B, T, 160) and frame mask (B, T), one clip at a time."""
        frames = self.frame_lengths(lengths)
        # filled on the CPU, where the extractor runs, then moved to the device in one copy
        host = torch.zeros((len(frames), int(frames.max()), 160), dtype=input_values.dtype)
        for i, clip in enumerate(self._clips(input_values, lengths)):
            feats = self._extractor(clip, sampling_rate=SAMPLE_RATE, return_tensors="np")
            valid = int(frames[i])
            host[i, :valid] = torch.from_numpy(feats["input_features"][0, :valid])
        out = host.to(input_values.device)
        mask = (
            torch.arange(out.shape[1], device=out.device)[None, :] < frames.to(out.device)[:, None]
        )
        return out, mask.to(torch.long)

    def _log_mel(self, input_values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Whisper log-mel (B, n_mels, M): 3000 frames (``pad-30s``) or the longest clip's."""
        if int(lengths.max()) > _WHISPER_WINDOW:
            raise ValueError(
                f"a clip of {int(lengths.max()) / SAMPLE_RATE:.1f} s is longer than the Whisper "
                "encoder's 30-second window; split or filter such clips"
            )
        pad = self.whisper_input == "pad-30s"
        mels = []
        for clip in self._clips(input_values, lengths):
            feats = self._extractor(
                clip * WHISPER_INPUT_GAIN,
                sampling_rate=SAMPLE_RATE,
                padding="max_length" if pad else "longest",
                return_tensors="pt",
            )
            mels.append(feats["input_features"][0])
        width = max(m.shape[-1] for m in mels)
        host = torch.zeros((len(mels), mels[0].shape[0], width), dtype=input_values.dtype)
        for i, mel in enumerate(mels):
            host[i, :, : mel.shape[-1]] = mel
        return host.to(input_values.device)  # one copy to the device, not one per clip

    def _whisper(
        self, input_values: torch.Tensor, lengths: torch.Tensor, want_states: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        mel = self._log_mel(input_values, lengths)
        frames = self.frame_lengths(lengths).to(mel.device)
        longest = int(frames.max())
        if self.whisper_input == "pad-30s":
            out = self.model(mel, output_hidden_states=want_states)
            states = out.hidden_states
            if states is not None:
                states = tuple(s[:, :longest] for s in states)
            return out.last_hidden_state[:, :longest], states
        return self._whisper_trimmed(mel, lengths, frames, want_states)

    def _whisper_trimmed(
        self,
        mel: torch.Tensor,
        lengths: torch.Tensor,
        frames: torch.Tensor,
        want_states: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        encoder: Any = self.model
        mel_frames = torch.div(lengths.to(mel.device), 160, rounding_mode="floor")
        mel_mask = torch.arange(mel.shape[-1], device=mel.device)[None, :] < mel_frames[:, None]
        keep = mel_mask[:, None, :].to(mel.dtype)
        x = nn.functional.gelu(encoder.conv1(mel * keep)) * keep
        x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (B, T, D)
        steps = x.shape[1]
        x = x + encoder.embed_positions.weight[:steps]
        x = nn.functional.dropout(x, p=encoder.dropout, training=self.training)
        frame_mask = torch.arange(steps, device=x.device)[None, :] < frames[:, None]
        # (B, 1, 1, T) additive mask: 0 = attend, dtype minimum = padded (right for both SDPA
        # and eager attention, which adds the mask to the scores)
        attention = torch.zeros(frame_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~frame_mask, torch.finfo(x.dtype).min
        )[:, None, None, :]
        states: list[torch.Tensor] = [x]
        for layer in encoder.layers:
            if not (self.training and encoder.layerdrop > 0 and torch.rand([]) < encoder.layerdrop):
                x = layer(x, attention)
            states.append(x)
        x = encoder.layer_norm(x)
        if want_states:
            states[-1] = x  # transformers reports the last layer after the final LayerNorm
        return x, tuple(states) if want_states else None

    # -- the rest of the Wav2Vec2Model interface -----------------------------------------

    def activation_checkpointing_enable(self, *args: Any, **kwargs: Any) -> Any:
        """Recompute each transformer layer in the backward pass (the wrapped model's)."""
        return cast(Any, self.model).activation_checkpointing_enable(*args, **kwargs)

    def front_end(self) -> list[nn.Module]:
        """The modules before the transformer that ``train_feature_encoder`` controls: the conv
        stack (HuBERT, WavLM), the two convs (Whisper); none for w2v-BERT, whose front end is
        the parameter-free fbank (its feature projection trains with the transformer)."""
        inner: Any = self.model
        if self.family.inputs == "waveform":
            return [inner.feature_extractor]
        if self.family.inputs == "log-mel":
            return [inner.conv1, inner.conv2]
        return []

    def fixed(self) -> list[nn.Module]:
        """Modules that never train (Whisper's sinusoidal ``embed_positions``, which
        transformers freezes too)."""
        inner: Any = self.model
        return [inner.embed_positions] if self.family.inputs == "log-mel" else []


def padded_positions(model: FamilySpeechModel, samples: int) -> int:
    """Positions the transformer computes for one clip of ``samples``: 1500 for Whisper in
    ``pad-30s`` mode, the clip's frames otherwise (what the cost grows with)."""
    if model.family.inputs == "log-mel" and model.whisper_input == "pad-30s":
        return int(model.config.max_source_positions)
    return int(model.frame_lengths(torch.tensor([samples]))[0])


__all__ = [
    "LENGTH_ADAPTOR_KEY",
    "WHISPER_INPUT_GAIN",
    "WHISPER_INPUT_KEY",
    "FamilySpeechModel",
    "WhisperInput",
    "padded_positions",
]
