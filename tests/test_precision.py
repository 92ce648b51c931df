"""samu_st.models.precision.bf16_weights: the same numbers as bf16 autocast alone, then the
fp32 parameters back."""

from __future__ import annotations

from pathlib import Path

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


class _DtypeProbe:
    """STTask that records the dtype of one frozen encoder weight at every loss."""

    def __init__(self, inner: object, weight: torch.nn.Module) -> None:
        self.inner, self.module = inner, weight
        self.dtypes: set[torch.dtype] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def loss(self, model: torch.nn.Module, batch: object) -> object:
        self.dtypes.add(self.module.weight.dtype)  # type: ignore[operator]
        return self.inner.loss(model, batch)  # type: ignore[attr-defined]


def test_training_with_frozen_weights_in_bf16_is_autocast_exactly(tmp_path: Path) -> None:
    """train.bf16_frozen_weights: the loop's losses and trained weights are bit-identical to
    autocast's own casts, the frozen weights are bf16 during the run and fp32 after it."""

    from samu_st.config import from_dict
    from samu_st.models.tokenizer import train_target_tokenizer
    from samu_st.steps.tasks_st import STCollator, STTask
    from samu_st.steps.train_st import TrainSTConfig, build_st_model
    from samu_st.training import train
    from samu_st.training.checkpoint import trainable_state
    from toy_train import ToySampler, toy_config

    lengths = (8000, 5600, 7100, 3000, 6400, 4800)
    texts = ["one two", "two", "three", "twenty one", "four", "five six"]
    tokenizer = train_target_tokenizer([*texts, "seven"], 30)
    g = torch.Generator().manual_seed(0)
    items = [
        {"wav": torch.randn(n, generator=g).numpy(), "id": f"u{i}", "index": i,
         "language": ("fr", "de", "es")[i % 3], "source_text": t, "target_text": t}
        for i, (n, t) in enumerate(zip(lengths, texts, strict=True))
    ]  # fmt: skip
    st_cfg = from_dict(
        TrainSTConfig,
        {
            "out_dir": "unused",
            "data": {"manifests": ["unused"]},
            "model": {"encoder": {"size": "tiny", "mode": "adapters"},
                      "decoder": {"preset": "tiny", "trainable": "lna"},
                      "length_adaptor_layers": 2},
        },
    )  # fmt: skip

    def run(flag: bool) -> tuple[list[float], dict[str, torch.Tensor], set[torch.dtype]]:
        model = build_st_model(st_cfg, tokenizer).train()
        frozen = model.speech_encoder.encoder.layers[0].attention.q_proj
        original = frozen.weight
        assert not original.requires_grad and original.dtype == torch.float32
        task = _DtypeProbe(STTask(tokenizer, 0.1), frozen)
        cfg = toy_config(4, cpu_bf16=True, mixed_precision="bf16", bf16_frozen_weights=flag)
        sampler = ToySampler(len(items), 3, seed=5)
        collate = STCollator(tokenizer, 64)
        result = train(task, model, items, collate, sampler, cfg, tmp_path / str(flag))  # type: ignore[arg-type]
        assert frozen.weight is original  # the fp32 parameter is back
        return [r["loss"] for r in result.history], trainable_state(model), task.dtypes

    plain, plain_weights, plain_dtypes = run(False)
    cast, cast_weights, cast_dtypes = run(True)
    assert plain_dtypes == {torch.float32} and cast_dtypes == {torch.bfloat16}
    assert plain[0] != plain[-1]  # it trains
    assert cast == plain
    assert plain_weights.keys() == cast_weights.keys()
    for name, tensor in plain_weights.items():
        assert torch.equal(tensor, cast_weights[name]), name
