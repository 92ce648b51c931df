"""samu_st.decoding.beam gives transformers generate()'s hypotheses, batched or one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import SpeechEncoderDecoderModel

from fixtures_corpora import number_tokenizer, random_translator
from samu_st.data.manifest import Utterance
from samu_st.decoding.beam import beam_search
from samu_st.decoding.translate import DecodeOptions, generate_batch, translate_utterances
from samu_st.errors import ConfigError
from samu_st.models.encoder import lengths_to_mask
from samu_st.models.tokenizer import (
    TargetTokenizer,
    generate_kwargs,
    generation_prefix,
)

LANGS = ("fr", "de", "ja", "cy", "fr", "de", "ja")
LENGTHS = (6000, 14000, 5000, 10000, 9000, 13000, 6500)  # samples at 16 kHz
EOS_BIAS = 8.0  # makes </s> compete, so hypotheses end at different lengths
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer() -> TargetTokenizer:
    return number_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: TargetTokenizer) -> SpeechEncoderDecoderModel:
    """A tiny random translator whose outputs depend on the audio and end at various lengths."""
    return random_translator(tokenizer, eos_bias=EOS_BIAS)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) waveforms, zero after their length, and their (B, S) mask."""
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor(LENGTHS)
    mask = lengths_to_mask(lengths, max(LENGTHS))
    return torch.randn(len(LENGTHS), max(LENGTHS), generator=generator) * mask, mask.long()


def _hf(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    **kwargs: float,
) -> list[list[int]]:
    """generate()'s rows without their trailing padding (checked to be padding only)."""
    values, mask = batch
    with torch.no_grad():
        out = cast(Any, model).generate(
            inputs=values,
            attention_mask=mask,
            do_sample=False,
            **kwargs,
            **generate_kwargs(tokenizer, LANGS),
        )
    rows = []
    for row in out.tolist():
        while row and row[-1] == tokenizer.pad_id:
            row.pop()
        rows.append(row)
    return rows


def _ours(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    **kwargs: float,
) -> list[list[int]]:
    values, mask = batch
    return beam_search(
        model,
        values,
        mask,
        generation_prefix(tokenizer, LANGS),
        eos_id=tokenizer.eos_id,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("num_beams", [1, 3, 5])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_same_hypotheses_as_generate(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    num_beams: int,
    length_penalty: float,
) -> None:
    kwargs = {"num_beams": num_beams, "max_new_tokens": 12, "length_penalty": length_penalty}
    ours = _ours(model, tokenizer, batch, **kwargs)
    assert ours == _hf(model, tokenizer, batch, **kwargs)
    lengths = {len(row) for row in ours}
    assert len(lengths) >= 2  # hypotheses end at different steps: early exits are exercised
    prefixes = generation_prefix(tokenizer, LANGS).tolist()
    assert all(row[:2] == prefix for row, prefix in zip(ours, prefixes, strict=True))


def test_outputs_differ_between_utterances(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    ours = _ours(model, tokenizer, batch, num_beams=3, max_new_tokens=12)
    assert len({tuple(row[2:]) for row in ours}) >= 3  # a comparison of real outputs
    assert any(row[-1] == tokenizer.eos_id for row in ours)
    assert any(len(row) == 2 + 12 for row in ours)  # and one cut at max_new_tokens


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_equals_one_by_one(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    num_beams: int,
) -> None:
    values, mask = batch
    prefix = generation_prefix(tokenizer, LANGS)
    batched = beam_search(
        model, values, mask, prefix, num_beams=num_beams, max_new_tokens=10, eos_id=tokenizer.eos_id
    )
    single = [
        beam_search(
            model,
            values[i : i + 1, :n],
            mask[i : i + 1, :n],
            prefix[i : i + 1],
            num_beams=num_beams,
            max_new_tokens=10,
            eos_id=tokenizer.eos_id,
        )[0]
        for i, n in enumerate(LENGTHS)
    ]
    assert batched == single


def test_generate_batch_engines_agree(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    values, mask = batch
    lengths = mask.sum(-1)
    texts = {
        engine: generate_batch(
            model, tokenizer, values, lengths, LANGS, num_beams=4, max_new_tokens=8, engine=engine
        )
        for engine in ("generate", "samu")
    }
    assert texts["samu"] == texts["generate"]
    assert sum(bool(t) for t in texts["samu"]) >= 3


def test_options_and_arguments_checked(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    assert DecodeOptions().engine == "generate"  # transformers' generate() stays the default
    with pytest.raises(ConfigError, match="engine"):
        DecodeOptions(engine="fast")  # type: ignore[arg-type]
    values, mask = batch
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(
            model,
            values,
            mask,
            generation_prefix(tokenizer, LANGS),
            num_beams=0,
            eos_id=tokenizer.eos_id,
        )


def test_translate_utterances_samu_engine_and_bf16(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer, tmp_path: Path
) -> None:
    """The option reaches the whole pipeline: same texts as generate() in fp32; bf16 runs."""
    utts = []
    for i, (seconds, lang) in enumerate(zip((0.4, 0.9, 0.3, 0.7), LANGS, strict=False)):
        t = np.arange(int(seconds * 16000)) / 16000
        wav = (0.3 * np.sin(2 * np.pi * (120 + 70 * i) * t)).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", wav, 16000)
        path = str(tmp_path / f"{i}.wav")
        utts.append(Utterance(f"u{i}", path, seconds, lang, "", "x", "spk", "test"))
    run = {
        name: translate_utterances(model, tokenizer, utts, options).hypotheses
        for name, options in {
            "generate": DecodeOptions(num_beams=3, max_new_tokens=8),
            "samu": DecodeOptions(num_beams=3, max_new_tokens=8, engine="samu"),
            "bf16": DecodeOptions(num_beams=3, max_new_tokens=8, engine="samu", bf16=True),
        }.items()
    }
    assert run["samu"] == run["generate"]
    assert len(set(run["samu"])) >= 2
    assert all(isinstance(h, str) for h in run["bf16"]) and len(run["bf16"]) == len(utts)


def test_our_search_uses_the_current_cache_api(
    model: SpeechEncoderDecoderModel,
    tokenizer: TargetTokenizer,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    # transformers 5.24 warns on every decoder call given `past_key_values` (issue 17)
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _ours(model, tokenizer, batch, num_beams=3, max_new_tokens=4)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
