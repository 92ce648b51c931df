"""samu_st.models.precision.bf16_weights: the same numbers as bf16 autocast alone, then the
fp32 parameters back."""

from __future__ import annotations

import pytest
import torch

from fixtures_corpora import number_tokenizer, random_translator
from samu_st.models.encoder import EncoderConfig, build_wav2vec2
from samu_st.models.precision import bf16_weights, castable

pytestmark = pytest.mark.usefixtures("one_thread")


def _autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_encoder_forward_is_bitwise_autocast_and_weights_come_back() -> None:
    torch.manual_seed(0)
    model = build_wav2vec2(EncoderConfig(size="tiny")).eval()
    wav = torch.randn(2, 8000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    with torch.no_grad(), _autocast():
        expected = model(wav).last_hidden_state
        with bf16_weights(model, frozen_only=False) as cast:
            assert cast > 0
            got = model(wav).last_hidden_state
    assert torch.equal(got, expected)
    assert dict(model.named_parameters()) == params  # the very same Parameter objects
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key


def test_frozen_only_leaves_trainable_weights_and_shared_embeddings() -> None:
    tok = number_tokenizer()
    model = random_translator(tok)
    model.requires_grad_(False)
    model.decoder.model.decoder.layers[0].encoder_attn.q_proj.requires_grad_(True)
    chosen = {id(getattr(m, n)) for m, n in castable(model)}
    q = model.decoder.model.decoder.layers[0].encoder_attn.q_proj
    assert id(q.weight) not in chosen and id(q.bias) not in chosen
    embed = model.decoder.get_input_embeddings().weight
    assert id(embed) not in chosen  # lm_head is tied to it: both stay fp32


def test_translator_decoding_is_unchanged() -> None:
    from samu_st.decoding.translate import generate_batch

    tok = number_tokenizer()
    model = random_translator(tok, eos_bias=8.0).eval()
    generator = torch.Generator().manual_seed(3)
    values = torch.randn(3, 9000, generator=generator)
    lengths = torch.tensor([9000, 7000, 5000])
    values[1, 7000:] = 0
    values[2, 5000:] = 0

    def decode() -> list[str]:
        with _autocast():
            return generate_batch(model, tok, values, lengths, ["fr", "de", "ja"], num_beams=3,
                                  max_new_tokens=8, engine="samu")  # fmt: skip

    expected = decode()
    with bf16_weights(model, frozen_only=False):
        assert decode() == expected
