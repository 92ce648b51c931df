"""Batched decoding of many utterances, and beam search for the speech translator.

- :func:`generate_batch` — one padded batch through transformers' ``generate()`` (greedy for
  ``num_beams=1``, beam search otherwise), the model's own decoder prefix forced
  (:func:`~samu_st.models.translator.decoder_prefix_mode`), the decoder's position limit
  respected; or, with ``engine="samu"``, through :func:`samu_st.decoding.beam.beam_search`
  (the same hypotheses, less wasted work).
- :func:`generate_with` — ``generate()`` under a complete search config of ours
  (:func:`search_config`): nothing is inherited from a checkpoint's ``generation_config``
  (MBART-50's ``early_stopping``, ``num_beams``, ``max_length``, forced tokens), so every
  system (end-to-end and cascade) searches the same way.
- :func:`decode_utterances` — any batch decoder (translation or CTC) over a list of
  utterances: duration-bucketed batches in length order (the sampler's ``shuffle=False``
  mode: little padding), a progress bar, hypotheses returned in INPUT order, bad audio either
  an error naming the file or a counted skip.
- :func:`translate_utterances` — the two together for a translator.

Padding does not change a row's output (the encoder and length adaptor are padding-exact,
:mod:`samu_st.models.translator`), so batched decoding equals one-by-one decoding.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import torch
from tqdm import tqdm
from transformers import GenerationConfig, SpeechEncoderDecoderModel

from samu_st.data.collate import AudioBatch, collate_audio
from samu_st.data.dataset import SpeechDataset, SpeechItem
from samu_st.data.manifest import Utterance
from samu_st.data.sampler import DurationBatchSampler
from samu_st.decoding.beam import beam_search
from samu_st.errors import AudioError, ConfigError
from samu_st.models.encoder import lengths_to_mask
from samu_st.models.precision import bf16_weights
from samu_st.models.tokenizer import (
    PrefixMode,
    TargetTokenizer,
    generate_kwargs,
    generation_prefix,
    prefix_length,
)
from samu_st.models.translator import decoder_prefix_mode

log = logging.getLogger(__name__)

Seconds = float
BatchDecoder = Callable[[AudioBatch], list[str]]
Engine = Literal["generate", "samu"]


@dataclass(frozen=True)
class DecodeOptions:
    """Beam search and batching of :func:`translate_utterances`."""

    num_beams: int = 5  # beam size; 1 = greedy decoding
    length_penalty: float = 1.0  # exponent of the length normalisation of beam scores
    max_new_tokens: int = 200  # tokens generated after the prefix (capped by the decoder)
    max_duration: Seconds = 120.0  # seconds of padded audio per batch (a longer clip goes alone)
    max_batch_size: int = 32  # utterances per batch; 0 = no limit
    # generate: transformers' generate(); samu: samu_st.decoding.beam, the same hypotheses
    # without generate's per-step re-indexing and with finished utterances leaving the batch.
    engine: Engine = "generate"
    # Run the model under bf16 autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs); the
    # scores change slightly, so a few hypotheses may too. Off: exact fp32 decoding.
    bf16: bool = False

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ConfigError("num_beams and max_new_tokens must be >= 1")
        if self.engine not in ("generate", "samu"):
            raise ConfigError(f"engine must be 'generate' or 'samu', got {self.engine!r}")
        if self.max_duration <= 0 or self.max_batch_size < 0:
            raise ConfigError("max_duration must be > 0 and max_batch_size >= 0")


def max_new_tokens_for(model: Any, wanted: int, prefix: int = 2) -> int:
    """``wanted``, capped so that a ``prefix``-token prefix + output fit the decoder's learned
    positions (``model``: a translator or an MBART text model)."""
    config = getattr(model.config, "decoder", None) or model.config  # translator or MBART MT
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return wanted
    return max(1, min(wanted, positions - prefix))


def search_config(
    tokenizer: TargetTokenizer, num_beams: int, length_penalty: float, max_new_tokens: int
) -> GenerationConfig:
    """A fresh, complete generation config: our search, nothing from a checkpoint.

    ``early_stopping=False`` is what :mod:`samu_st.decoding.beam` implements; no forced
    tokens (the prefix is given as decoder inputs), no sampling, one sequence per input.
    """
    return GenerationConfig(
        num_beams=num_beams,
        length_penalty=length_penalty,
        max_new_tokens=max_new_tokens,
        early_stopping=False,
        do_sample=False,
        num_return_sequences=1,
        decoder_start_token_id=tokenizer.decoder_start_id,
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )


@contextlib.contextmanager
def _only(model: Any, config: GenerationConfig) -> Iterator[None]:
    # generate() fills every value a passed config leaves unset (None) from
    # model.generation_config (transformers 5: "defaults_only"), e.g. MBART-50's
    # forced_eos_token_id or no_repeat_ngram_size: for the call, the model's IS ours.
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def generate_with(model: Any, config: GenerationConfig, **inputs: Any) -> torch.Tensor:
    """``model.generate(**inputs)`` searching exactly as ``config`` says."""
    with _only(model, config):
        return cast(torch.Tensor, model.generate(**inputs, generation_config=config))


@torch.no_grad()
def generate_batch(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    input_values: torch.Tensor,
    lengths: torch.Tensor,
    langs: Sequence[str],
    *,
    num_beams: int = 5,
    length_penalty: float = 1.0,
    max_new_tokens: int = 200,
    engine: Engine = "generate",
    prefix: PrefixMode | None = None,
) -> list[str]:
    """Translations of a right-padded batch ``input_values`` (B, S) with ``lengths`` (B,),
    spoken in source languages ``langs`` (B codes), by ``engine`` (see :class:`DecodeOptions`).

    ``prefix``: the decoder prefix mode; None (always, but in tests): the model's own."""
    if len(langs) != input_values.shape[0] or lengths.shape != (input_values.shape[0],):
        raise ValueError(
            f"batch of {input_values.shape[0]} waveforms, {len(langs)} languages, "
            f"lengths of shape {tuple(lengths.shape)}"
        )
    device = next(model.parameters()).device
    mask = lengths_to_mask(lengths.to(device), input_values.shape[1]).long()
    mode = prefix or decoder_prefix_mode(model)
    new_tokens = max_new_tokens_for(model, max_new_tokens, prefix_length(mode))
    if engine == "samu":
        rows = beam_search(
            model,
            input_values.to(device),
            mask,
            generation_prefix(tokenizer, langs, mode).to(device),
            num_beams=num_beams,
            max_new_tokens=new_tokens,
            length_penalty=length_penalty,
            eos_id=tokenizer.eos_id,
        )
        return tokenizer.batch_decode(rows)
    out = generate_with(
        model,
        search_config(tokenizer, num_beams, length_penalty, new_tokens),
        inputs=input_values.to(device),
        attention_mask=mask,
        **generate_kwargs(tokenizer, langs, device, mode),
    )
    return tokenizer.batch_decode(out.tolist())


class Skipped(NamedTuple):
    """An utterance left out of decoding."""

    id: str
    reason: str  # the error message (it names the file)


class Decoded(NamedTuple):
    """Hypotheses in input order (``None`` where skipped) and the skipped utterances."""

    hypotheses: list[str | None]
    skipped: list[Skipped]


def _load(
    dataset: SpeechDataset, keys: Sequence[Any], skip_bad: bool, skipped: list[Skipped]
) -> list[SpeechItem]:
    items: list[SpeechItem] = []
    for key in keys:
        try:
            items.append(dataset[key])
        except AudioError as err:
            if not skip_bad:
                raise
            index = int(key[0]) if isinstance(key, tuple) else int(key)
            skipped.append(Skipped(dataset.utterances[index].id, str(err)))
            log.warning("skipped: %s", err)
    return items


def decode_utterances(
    utterances: Sequence[Utterance],
    decode_batch: BatchDecoder,
    *,
    max_duration: Seconds = 120.0,
    max_batch_size: int = 32,
    normalize: bool = True,
    progress: bool = False,
    skip_bad: bool = False,
    desc: str = "decoding",
) -> Decoded:
    """Run ``decode_batch`` over ``utterances`` (absolute audio paths) in duration-bucketed
    batches; returns one hypothesis per utterance, in input order.

    ``normalize``: zero-mean unit-variance waveforms (wav2vec2 input). A clip that cannot be
    decoded raises :class:`AudioError` naming the file, or, with ``skip_bad``, is skipped and
    listed in :attr:`Decoded.skipped` (its hypothesis is ``None``).
    """
    hypotheses: list[str | None] = [None] * len(utterances)
    skipped: list[Skipped] = []
    if not utterances:
        return Decoded(hypotheses, skipped)
    dataset = SpeechDataset(utterances, None, normalize=normalize)
    longest = float(dataset.durations.max())
    sampler = DurationBatchSampler(
        dataset.durations,
        max(max_duration, longest),  # a clip longer than a batch is decoded alone
        max_batch_size=max_batch_size or None,
        shuffle=False,
        drop_last=False,
    )
    bar = tqdm(total=len(utterances), desc=desc, unit="utt", disable=None if progress else True)
    try:
        for keys in sampler:
            items = _load(dataset, keys, skip_bad, skipped)
            if items:
                batch = collate_audio(items)
                for index, text in zip(batch.indices, decode_batch(batch), strict=True):
                    hypotheses[index] = text
            bar.update(len(keys))
    finally:
        bar.close()
    return Decoded(hypotheses, skipped)


def translate_utterances(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    utterances: Sequence[Utterance],
    options: DecodeOptions | None = None,
    *,
    progress: bool = False,
    skip_bad: bool = False,
) -> Decoded:
    """Translate ``utterances`` (each carries its source language) with beam search."""
    opts = options or DecodeOptions()

    device = next(model.parameters()).device

    def decode_batch(batch: AudioBatch) -> list[str]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            return generate_batch(
                model,
                tokenizer,
                batch.input_values,
                batch.lengths,
                batch.languages,
                num_beams=opts.num_beams,
                length_penalty=opts.length_penalty,
                max_new_tokens=opts.max_new_tokens,
                engine=opts.engine,
            )

    was_training = model.training
    model.eval()
    # bf16: weights stored in bf16 once instead of re-cast by autocast at every call (the
    # same numbers, models/precision.py); fp32 decoding is left exactly as it is.
    weights = bf16_weights(model, frozen_only=False) if opts.bf16 else contextlib.nullcontext()
    try:
        with weights:
            return decode_utterances(
                utterances,
                decode_batch,
                max_duration=opts.max_duration,
                max_batch_size=opts.max_batch_size,
                progress=progress,
                skip_bad=skip_bad,
                desc="translating",
            )
    finally:
        model.train(was_training)
