"""Speech translator: trainable parts, padding, language conditioning, generation, one folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from num2words import num2words
from transformers import SpeechEncoderDecoderModel, Wav2Vec2Model

from samu_st.errors import ModelLoadError
from samu_st.models.adapters import bottleneck_adapters
from samu_st.models.decoder import DecoderConfig, mbart_config
from samu_st.models.encoder import EncoderConfig, lengths_to_mask, wav2vec2_config
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer
from samu_st.models.translator import (
    LengthAdaptor,
    TranslatorConfig,
    build_translator,
    encoder_output_lengths,
    generate_kwargs,
    length_adaptor_output_lengths,
    load_translator,
    make_decoder_targets,
    save_translator,
    translate,
)

TINY = TranslatorConfig(
    encoder=EncoderConfig(size="tiny", mode="adapters"),
    decoder=DecoderConfig(preset="tiny"),
    length_adaptor_layers=2,
)
SAMPLES = torch.tensor([16000, 9000, 12345])


@pytest.fixture(scope="module")
def tokenizer() -> TargetTokenizer:
    return train_target_tokenizer([num2words(i) for i in range(300)], vocab_size=150)


@pytest.fixture(scope="module")
def model(tokenizer: TargetTokenizer) -> SpeechEncoderDecoderModel:
    torch.manual_seed(0)
    return build_translator(TINY, tokenizer).eval()


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(SAMPLES), int(SAMPLES.max()), generator=generator)
    mask = lengths_to_mask(SAMPLES, audio.shape[1])
    return audio * mask, mask.long()


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_trainable_parts_in_adapter_mode(model: SpeechEncoderDecoderModel) -> None:
    enc, dec = model.encoder.config, model.decoder.config
    d, e = dec.d_model, enc.hidden_size  # 16, 32
    hidden = e // 4
    adapters = enc.num_hidden_layers * 2 * (e * hidden + hidden + hidden * e + e)
    length_adaptor = 2 * (e * 2 * e * 3 + 2 * e)  # Conv1d(e, 2e, k=3) per layer
    projection = e * d + d
    lna = dec.decoder_layers * (4 * (d * d + d) + 3 * 2 * d) + 2 * 2 * d
    assert _count(model, trainable=True) == adapters + length_adaptor + projection + lna
    assert _count(model.encoder.adapter) == length_adaptor
    assert isinstance(model.encoder.adapter, LengthAdaptor)
    # fresh bottleneck adapters are the identity: zero up-projection, not re-initialised
    assert all(bool((a.up.weight == 0).all()) for a in bottleneck_adapters(model.encoder))
    assert model.decoder.lm_head.weight is model.decoder.model.decoder.embed_tokens.weight


def test_full_encoder_mode_trains_all_but_the_conv_front_end(tokenizer: TargetTokenizer) -> None:
    cfg = dataclasses.replace(TINY, encoder=EncoderConfig(size="tiny", mode="full"))
    full = build_translator(cfg, tokenizer)
    encoder = full.encoder
    assert not bottleneck_adapters(encoder)
    conv = _count(encoder.feature_extractor)
    assert _count(encoder, trainable=True) == _count(encoder) - conv
    assert not any(p.requires_grad for p in encoder.feature_extractor.parameters())


def test_output_lengths_and_padding_invariance(model: SpeechEncoderDecoderModel) -> None:
    audio, mask = _batch()
    frames = encoder_output_lengths(model, SAMPLES)
    conv = model.encoder._get_feat_extract_output_lengths(SAMPLES, add_adapter=False)
    assert frames.tolist() == length_adaptor_output_lengths(conv, 2).tolist()
    assert frames.tolist() == [13, 7, 10]  # 49, 28, 38 frames at 50 Hz, /2 twice
    prefix = torch.tensor([[2, 5, 30, 40]] * 3)
    with torch.no_grad():
        batched = model(inputs=audio, attention_mask=mask, decoder_input_ids=prefix)
        assert batched.encoder_last_hidden_state.shape[1] == 13
        for i, n in enumerate(SAMPLES.tolist()):
            alone = model(inputs=audio[i : i + 1, :n], decoder_input_ids=prefix[i : i + 1])
            states = alone.encoder_last_hidden_state[0]
            assert states.shape[0] == frames[i]
            torch.testing.assert_close(
                batched.encoder_last_hidden_state[i, : frames[i]], states, atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(batched.logits[i], alone.logits[0], atol=1e-5, rtol=1e-4)


def test_decoder_targets_and_language_conditioning(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer
) -> None:
    targets = make_decoder_targets(tokenizer, ["five", "twenty-one"], ["fr", "cy"])
    five, twenty_one = tokenizer.encode(["five", "twenty-one"])
    fr, cy = tokenizer.lang_token_id("fr"), tokenizer.lang_token_id("cy")
    width = len(twenty_one) + 1
    assert targets.input_ids.shape == targets.labels.shape == targets.mask.shape == (2, width)
    assert targets.input_ids[1].tolist() == [2, cy, *twenty_one[:-1]]
    assert targets.labels[1].tolist() == [-100, *twenty_one]
    pad = width - len(five) - 1
    assert targets.input_ids[0].tolist() == [2, fr, *five[:-1]] + [tokenizer.pad_id] * pad
    assert targets.labels[0].tolist() == [-100, *five] + [-100] * pad
    assert targets.mask.sum(1).tolist() == [len(five) + 1, len(twenty_one) + 1]
    cut = make_decoder_targets(tokenizer, ["twenty-one"], ["fr"], max_length=3)
    assert cut.labels[0].tolist()[-1] == tokenizer.eos_id and cut.labels.shape[1] == 3
    audio, _ = _batch()
    ids = make_decoder_targets(tokenizer, ["five"] * 3, ["fr", "fr", "de"]).input_ids
    with torch.no_grad():
        logits = model(inputs=audio[:1].expand(3, -1), decoder_input_ids=ids).logits
    torch.testing.assert_close(logits[0], logits[1])
    assert (logits[0, 1:] - logits[2, 1:]).abs().max() > 1e-3  # the language token matters
    torch.testing.assert_close(logits[0, 0], logits[2, 0])  # before it, nothing differs


def _greedy(model: SpeechEncoderDecoderModel, audio: torch.Tensor, prefix: list[int], steps: int):
    ids = list(prefix)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(inputs=audio[None], decoder_input_ids=torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == 2:
                break
    return ids


def test_generate_matches_greedy_and_batching(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer
) -> None:
    audio, mask = _batch()
    langs = ["fr", "ja", "sv-SE"]
    kwargs = generate_kwargs(tokenizer, langs)
    out = model.generate(inputs=audio, attention_mask=mask, num_beams=1, max_new_tokens=6, **kwargs)
    assert out[:, :2].tolist() == [[2, tokenizer.lang_token_id(lang)] for lang in langs]
    for i, n in enumerate(SAMPLES.tolist()):
        prefix = [2, tokenizer.lang_token_id(langs[i])]
        expected = _greedy(model, audio[i, :n], prefix, 6)
        assert out[i, : len(expected)].tolist() == expected
        assert all(t == tokenizer.pad_id for t in out[i, len(expected) :].tolist())
    for beams in (1, 3):
        batched = _generate(model, tokenizer, audio, SAMPLES, langs, beams)
        alone = [
            _generate(model, tokenizer, audio[i : i + 1, :n], SAMPLES[i : i + 1], [langs[i]], beams)
            for i, n in enumerate(SAMPLES.tolist())
        ]
        assert [row[: len(a[0])] for row, a in zip(batched, alone, strict=True)] == [
            a[0] for a in alone
        ]
        assert len({tuple(row[2:]) for row in batched}) > 1  # not a constant output
    texts = translate(model, tokenizer, audio, SAMPLES, langs, num_beams=2, max_new_tokens=6)
    assert texts == [
        tokenizer.decode(row) for row in _generate(model, tokenizer, audio, SAMPLES, langs, 2)
    ]


def _generate(model, tokenizer, audio, lengths, langs, beams):  # type: ignore[no-untyped-def]
    mask = lengths_to_mask(lengths, audio.shape[1]).long()
    kwargs = generate_kwargs(tokenizer, langs)
    out = model.generate(
        inputs=audio, attention_mask=mask, num_beams=beams, max_new_tokens=6, **kwargs
    )
    return [[t for t in row if t != tokenizer.pad_id] for row in out.tolist()]


def test_save_load_round_trip(
    model: SpeechEncoderDecoderModel, tokenizer: TargetTokenizer, tmp_path: Path
) -> None:
    folder = save_translator(tmp_path / "st", model, tokenizer, TINY)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "samu_translator.json", "model.safetensors", "tokenizer.json"} <= names
    save_translator(folder, model, tokenizer, TINY)  # overwriting an existing folder works
    loaded = load_translator(folder)
    assert loaded.config == TINY
    assert loaded.tokenizer.language_ids == tokenizer.language_ids
    restored = loaded.model.eval()
    assert _count(restored, trainable=True) == _count(model, trainable=True)
    audio, mask = _batch()
    ids = make_decoder_targets(tokenizer, ["one", "two", "three"], ["fr", "de", "es"]).input_ids
    with torch.no_grad():
        before = model(inputs=audio, attention_mask=mask, decoder_input_ids=ids).logits
        after = restored(inputs=audio, attention_mask=mask, decoder_input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.safetensors"):
        load_translator(folder)


def test_encoder_and_decoder_from_saved_folders(tokenizer: TargetTokenizer, tmp_path: Path) -> None:
    torch.manual_seed(3)
    step2 = Wav2Vec2Model(wav2vec2_config(EncoderConfig(size="tiny")))
    step2.save_pretrained(tmp_path / "encoder")
    from transformers import MBartForConditionalGeneration

    mbart = MBartForConditionalGeneration(mbart_config("tiny", len(tokenizer), encoder_layers=1))
    mbart.save_pretrained(tmp_path / "mbart")
    cfg = TranslatorConfig(
        encoder=EncoderConfig(pretrained=str(tmp_path / "encoder"), mode="adapters"),
        decoder=DecoderConfig(pretrained=str(tmp_path / "mbart")),
        length_adaptor_layers=1,
    )
    st = build_translator(cfg, tokenizer)
    got = st.encoder.state_dict()
    for key, value in step2.state_dict().items():
        torch.testing.assert_close(got[key], value, atol=0, rtol=0, msg=key)
    decoder = st.decoder.model.decoder.state_dict()
    for key, value in mbart.model.decoder.state_dict().items():
        torch.testing.assert_close(decoder[key], value, atol=0, rtol=0, msg=key)
    assert len(bottleneck_adapters(st.encoder)) == 4
    assert st.encoder.config.num_adapter_layers == 1
    # with identity adapters and no length adaptor, the encoder is the step-2 encoder
    no_adaptor = dataclasses.replace(cfg, length_adaptor_layers=0)
    plain = build_translator(no_adaptor, tokenizer).eval()
    audio, mask = _batch()
    with torch.no_grad():
        ours = plain.encoder(audio, attention_mask=mask).last_hidden_state
        theirs = step2.eval()(audio, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
