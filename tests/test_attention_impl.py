"""samu_st.models.attention_impl: transformers' "eager" attention (and samu_eager, eager with
the fast CPU dropout) for a block reaches every attention module (also one holding its own
config copy), gives SDPA's numbers and gradients, and the old settings return after the block;
the training loop uses it on a CPU (``train.cpu_attention: eager``, ``train.cpu_dropout``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformers import PretrainedConfig

from fixtures_corpora import random_st_items
from samu_st.config import from_dict
from samu_st.models.attention_impl import CPU_EAGER, attention_implementation, module_configs
from samu_st.models.tokenizer import train_target_tokenizer
from samu_st.steps.tasks_st import STCollator
from samu_st.steps.train_st import TrainSTConfig, build_st_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL: dict[str, Any] = {
    "encoder": {"size": "tiny", "mode": "adapters"},
    "decoder": {"preset": "tiny"},
    "length_adaptor_layers": 2,
}


def _model_and_batch() -> tuple[nn.Module, Any]:
    cfg = from_dict(
        TrainSTConfig, {"out_dir": "unused", "data": {"manifests": ["unused"]}, "model": TINY_MODEL}
    )
    tokenizer = train_target_tokenizer(["one", "two", "three", "twenty"], 30)
    torch.manual_seed(0)
    model = build_st_model(cfg, tokenizer).eval()  # eval: no dropout, the same numbers twice
    items = random_st_items()
    return model, STCollator(tokenizer, 64)(items)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if n.endswith(("attention", "attn"))]


def test_every_attention_module_and_the_old_settings_come_back() -> None:
    model, _ = _model_and_batch()
    # a layer holding its own copy of the config (as the encoder layers of a loaded wav2vec2
    # do): set_attn_implementation on the outer model would not reach it
    layer = model.translator.encoder.encoder.layers[0].attention
    layer.config = copy.deepcopy(layer.config)
    modules = _attention_modules(model)
    kinds = {type(m).__name__ for m in modules}
    assert {"Wav2Vec2Attention", "MBartAttention"} <= kinds
    before = [m.config._attn_implementation for m in modules]
    assert set(before) == {"sdpa"}
    assert layer.config in module_configs(model)
    with attention_implementation(model, "eager") as changed:
        assert changed == len(module_configs(model))
        assert {m.config._attn_implementation for m in modules} == {"eager"}
    assert [m.config._attn_implementation for m in modules] == before
    with pytest.raises(RuntimeError), attention_implementation(model, "eager"):
        raise RuntimeError("boom")
    assert [m.config._attn_implementation for m in modules] == before
    with attention_implementation(model, "sdpa") as changed:
        assert changed == 0  # already so


@pytest.mark.parametrize("name", ["eager", CPU_EAGER])
def test_eager_gives_sdpa_numbers_and_gradients_with_padding(name: str) -> None:
    model, batch = _model_and_batch()
    assert bool((~batch.audio.attention_mask.bool()).any())  # padded clips

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        logits = model(batch.audio.input_values, batch.audio.attention_mask,
                       batch.decoder_input_ids, batch.decoder_mask).logits  # fmt: skip
        keep = batch.decoder_mask.bool()
        (logits[keep] * torch.linspace(-1, 1, logits.shape[-1])).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits[keep].detach(), grads

    sdpa_logits, sdpa_grads = run()
    with attention_implementation(model, name):
        assert {m.config._attn_implementation for m in _attention_modules(model)} == {name}
        eager_logits, eager_grads = run()
    torch.testing.assert_close(eager_logits, sdpa_logits, rtol=1e-4, atol=1e-5)
    assert eager_grads.keys() == sdpa_grads.keys() and len(eager_grads) > 10
    for name, grad in sdpa_grads.items():
        torch.testing.assert_close(eager_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_the_training_loop_uses_it_on_the_cpu(tmp_path: Path) -> None:
    from samu_st.training import train
    from toy_train import ToyDataset, ToyModel, ToySampler, ToyTask, collate, toy_config

    class Model(ToyModel):
        """The toy holding a transformers config, as an attention module does."""

        def __init__(self) -> None:
            super().__init__()
            self.config = PretrainedConfig(attn_implementation="sdpa")
            self.config.model_type = "wav2vec2"  # one whose eager attention samu_eager is

    class Probe(ToyTask):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[str] = set()

        def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
            self.seen.add(getattr(model, "module", model).config._attn_implementation)
            return super().loss(model, batch)

    settings = [
        ("eager", "fast", {CPU_EAGER}),
        ("eager", "torch", {"eager"}),
        ("math", "fast", {"sdpa"}),
        ("default", "torch", {"sdpa"}),
    ]
    for setting, dropout, expected in settings:
        probe, model = Probe(), Model()
        data = ToyDataset(24)
        cfg = toy_config(3, cpu_attention=setting, cpu_dropout=dropout)
        out = tmp_path / f"{setting}-{dropout}"
        train(probe, model, data, collate, ToySampler(24, 8), cfg, out)
        assert probe.seen == expected
        assert model.config._attn_implementation == "sdpa"  # restored after the run


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "w2v-bert", "whisper"])
# WavLM's own attention (transformers) mixes a bool padding mask with a float bias
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
def test_every_encoder_family_gives_its_own_numbers(family: str) -> None:
    """samu_eager (w2v-BERT's relative position bias included) and plain eager compute each
    family's attention as its default implementation does; a family whose attention is its
    own (WavLM) is unaffected."""
    from samu_st.models.encoder import EncoderConfig, SpeechEncoder

    torch.manual_seed(0)
    cfg = EncoderConfig(family=family, size="tiny", mode="adapters")  # type: ignore[arg-type]
    encoder = SpeechEncoder.from_config(cfg).eval()
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 16000, generator=g)
    lengths = torch.tensor([16000, 11000])
    with torch.no_grad():
        own = encoder(wav, lengths)
        for name in ("eager", CPU_EAGER):
            with attention_implementation(encoder, name):
                out = encoder(wav, lengths)
            assert torch.equal(out.lengths, own.lengths)
            keep = own.mask
            torch.testing.assert_close(out.hidden[keep], own.hidden[keep], rtol=1e-4, atol=1e-5)
