"""Bottleneck adapters: identity at init, only adapters train, save/load, both layer types."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Model

from samu_st.errors import ModelLoadError
from samu_st.models.adapters import (
    BottleneckAdapter,
    add_bottleneck_adapters,
    bottleneck_adapters,
    has_bottleneck_adapters,
)
from samu_st.models.encoder import EncoderConfig, SpeechEncoder, load_wav2vec2, wav2vec2_config

TINY = EncoderConfig(size="tiny", hidden_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0)
VARIANTS = {"pre_ln": {}, "post_ln": {"do_stable_layer_norm": False}}


def _model(variant: str) -> Wav2Vec2Model:
    torch.manual_seed(0)
    return Wav2Vec2Model(wav2vec2_config(TINY, **VARIANTS[variant])).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(2, 6000, generator=gen), torch.tensor([6000, 4000])


def test_adapter_module_starts_as_identity_and_has_expected_size() -> None:
    adapter = BottleneckAdapter(1024, 0.25)
    x = torch.randn(2, 5, 1024)
    assert torch.equal(adapter(x), x)
    assert sum(p.numel() for p in adapter.parameters()) == 2 * 1024 * 256 + 256 + 1024
    with_norm = BottleneckAdapter(1024, 0.25, activation="gelu", layer_norm=True)
    assert sum(p.numel() for p in with_norm.parameters()) == 2 * 1024 * 256 + 256 + 1024 + 2048
    with pytest.raises(ValueError, match="activation"):
        BottleneckAdapter(8, activation="swish")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fresh_adapters_give_exactly_the_original_outputs(variant: str) -> None:
    model = _model(variant)
    wav, lengths = _inputs()
    with torch.no_grad():
        before = SpeechEncoder(model, "frozen")(wav, lengths).hidden
        added = add_bottleneck_adapters(model)
        after = SpeechEncoder(model, "frozen")(wav, lengths).hidden
    assert len(added) == 2 * model.config.num_hidden_layers
    assert torch.equal(before, after)
    with pytest.raises(ValueError, match="already has"):
        add_bottleneck_adapters(model)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradient_step_trains_only_adapters(variant: str) -> None:
    encoder = SpeechEncoder(_model(variant), "adapters")
    wav, lengths = _inputs()
    with torch.no_grad():
        before = encoder(wav, lengths).hidden
    frozen = {n: p.detach().clone() for n, p in encoder.named_parameters() if not p.requires_grad}
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    adapter_params = {id(p) for a in bottleneck_adapters(encoder) for p in a.parameters()}
    assert {id(p) for p in trainable} == adapter_params
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    encoder.train()
    encoder.model.config.mask_time_prob = 0.0
    out = encoder(wav, lengths)
    (out.hidden * torch.randn_like(out.hidden)).sum().backward()
    assert all(p.grad is None for p in encoder.parameters() if id(p) not in adapter_params)
    # both adapters of every layer receive a gradient (the up-projections start at zero)
    assert all(
        a.up.weight.grad is not None and a.up.weight.grad.abs().sum() > 0
        for a in bottleneck_adapters(encoder)
    )
    optimizer.step()
    encoder.eval()
    with torch.no_grad():
        after = encoder(wav, lengths).hidden
    assert (after - before).abs().max() > 1e-4
    for name, value in encoder.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name


def test_adapters_save_and_load_round_trip(tmp_path: Path) -> None:
    model = _model("pre_ln")
    add_bottleneck_adapters(model, ratio=0.5, activation="gelu", layer_norm=True)
    for adapter in bottleneck_adapters(model):
        torch.nn.init.normal_(adapter.up.weight, std=0.1)
    model.save_pretrained(tmp_path / "enc")
    loaded = load_wav2vec2(str(tmp_path / "enc")).eval()
    assert has_bottleneck_adapters(loaded) and len(bottleneck_adapters(loaded)) == 4
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    wav, lengths = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            SpeechEncoder(loaded)(wav, lengths).hidden, SpeechEncoder(model)(wav, lengths).hidden
        )
    # plain state-dict round trip into a fresh model with adapters
    fresh = _model("pre_ln")
    add_bottleneck_adapters(fresh, ratio=0.5, activation="gelu", layer_norm=True)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(
        fresh.encoder.layers[1].feed_forward.bottleneck_adapter.up.weight,
        model.encoder.layers[1].feed_forward.bottleneck_adapter.up.weight,
    )


def test_adapter_weights_with_wrong_shape_are_an_error(tmp_path: Path) -> None:
    model = _model("post_ln")
    add_bottleneck_adapters(model, ratio=0.25)
    model.config.samu_bottleneck_adapters = {
        "ratio": 0.5,
        "activation": "relu",
        "layer_norm": False,
    }
    model.save_pretrained(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=r"bottleneck_adapter\.down\.weight has shape \(8, 32\) in the file but \(16, 32\)",
    ):
        load_wav2vec2(str(tmp_path))


def test_deepcopy_keeps_working_hooks() -> None:
    model = _model("pre_ln")
    add_bottleneck_adapters(model)
    clone = copy.deepcopy(model)
    for adapter in bottleneck_adapters(clone):
        torch.nn.init.normal_(adapter.up.weight)
    wav, lengths = _inputs()
    with torch.no_grad():
        original = SpeechEncoder(model, "frozen")(wav, lengths).hidden
        changed = SpeechEncoder(clone, "frozen")(wav, lengths).hidden
    assert (original - changed).abs().max() > 1e-3
