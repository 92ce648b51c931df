"""The frozen conv front end's cache (samu_st.models.front_end_cache): same numbers as without
it, served only where that holds, bounded memory; and through train-st / distill."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Model

from samu_st.config import from_dict
from samu_st.models.encoder import EncoderConfig, SpeechEncoder, wav2vec2_config
from samu_st.models.front_end_cache import FrontEndCache, front_end_is_cacheable
from samu_st.models.samu import SamuModel
from samu_st.models.tokenizer import train_target_tokenizer
from samu_st.steps.tasks_distill import DistillModel
from samu_st.steps.tasks_st import STCollator
from samu_st.steps.train_st import TrainSTConfig, build_st_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [("fr", "one two"), ("de", "two"), ("es", "three"), ("fr", "twenty one")]


def _waves(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) for n in (8000, 5600, 7100, 3000)]


def _batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    values = torch.zeros(len(waves), int(lengths.max()))
    for row, w in enumerate(waves):
        values[row, : len(w)] = w
    return values, lengths


def _encoder(**fields: Any) -> SpeechEncoder:
    torch.manual_seed(0)
    return SpeechEncoder.from_config(EncoderConfig(size="tiny", **fields))


def test_features_equal_the_conv_stack_on_valid_frames_and_are_reused() -> None:
    model = _encoder(mode="adapters").model.train()
    values, lengths = _batch(_waves())
    cache = FrontEndCache(2**20)
    reference = model.feature_extractor(values).detach()
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    for _ in range(2):
        served = cache.features(model, values, lengths)
        assert served.shape == reference.shape
        for row, n in enumerate(frames):
            torch.testing.assert_close(served[row, :, :n], reference[row, :, :n])
            assert served[row, :, n:].abs().sum() == 0
    assert (cache.stats.misses, cache.stats.hits, len(cache)) == (4, 4, 4)
    # the same clip in another batch (other padding, other position) is found again
    again, again_lengths = _batch(_waves()[1:2])
    cache.features(model, again, again_lengths)
    assert cache.stats.hits == 5
    # another speed factor (other samples) is another clip
    cache.features(model, *_batch([_waves()[1][::2].clone()]))
    assert cache.stats.misses == 5


@pytest.mark.parametrize("autocast", [False, True])
def test_training_forward_and_gradients_are_those_without_the_cache(autocast: bool) -> None:
    encoder = _encoder(mode="adapters").train()
    values, lengths = _batch(_waves())
    cache = FrontEndCache(2**20)

    def run(use_cache: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        encoder.zero_grad()
        torch.manual_seed(7)  # dropout and SpecAugment masks (numpy's RNG): the same draws
        np.random.seed(7)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if use_cache:
                with cache.serve(encoder.model, values, lengths):
                    out = encoder(values, lengths)
            else:
                out = encoder(values, lengths)
        out.hidden.float().pow(2).sum().backward()
        grads = [p.grad.clone() for p in encoder.parameters() if p.requires_grad]
        return out.hidden.detach(), grads

    hidden, grads = run(False)
    for _ in range(2):  # computed, then served from memory
        cached_hidden, cached_grads = run(True)
        torch.testing.assert_close(cached_hidden, hidden)
        for a, b in zip(cached_grads, grads, strict=True):
            torch.testing.assert_close(a, b)
    assert (cache.stats.misses, cache.stats.hits) == (4, 4)
    assert "forward" not in vars(encoder.model.feature_extractor)  # the override is gone


def test_served_only_in_training_with_a_frozen_layer_norm_stack() -> None:
    values, lengths = _batch(_waves())
    cache = FrontEndCache(2**20)
    adapters = _encoder(mode="adapters").model
    assert front_end_is_cacheable(adapters)
    with cache.serve(adapters.eval(), values, lengths):  # validation / decoding
        pass
    trains = _encoder(mode="full", train_feature_encoder=True).model.train()
    assert not front_end_is_cacheable(trains)
    with cache.serve(trains, values, lengths):
        pass
    group_config = wav2vec2_config(EncoderConfig(size="tiny"))
    group_config.feat_extract_norm = "group"
    with pytest.warns(UserWarning, match="GroupNorm"):
        group = SpeechEncoder(Wav2Vec2Model(group_config), "frozen").model.train()
    assert not front_end_is_cacheable(group)  # GroupNorm mixes the padded batch
    with cache.serve(group, values, lengths):
        pass
    assert (cache.stats.misses, cache.stats.hits, len(cache)) == (0, 0, 0)
    with cache.serve(adapters.train(), values, lengths):
        pass
    assert cache.stats.misses == 4


def test_memory_stays_within_the_budget_least_recently_used_out() -> None:
    model = _encoder(mode="adapters").model.train()
    waves = _waves()
    one = model.feature_extractor(waves[0][None]).numel() * 4
    cache = FrontEndCache(int(one * 1.5))  # room for the longest clip and not much more
    for w in waves:
        cache.features(model, *_batch([w]))
        assert cache.bytes <= cache.max_bytes
    assert cache.stats.evicted >= 2 and len(cache) >= 1
    cache.features(model, *_batch([waves[-1]]))  # the newest is still there
    assert cache.stats.hits == 1
    with pytest.raises(ValueError, match="positive"):
        FrontEndCache(0)


def test_train_st_model_losses_match_with_and_without_the_cache() -> None:
    tokenizer = train_target_tokenizer([t for _, t in TEXTS] + ["three"], 30)
    items = [
        {"wav": w.numpy(), "id": f"u{i}", "language": lang, "index": i,
         "source_text": text, "target_text": text}
        for i, (w, (lang, text)) in enumerate(zip(_waves(), TEXTS, strict=True))
    ]  # fmt: skip

    def losses(cache_mb: int) -> tuple[list[float], Any]:
        cfg = from_dict(
            TrainSTConfig,
            {
                "out_dir": "unused",
                "data": {"manifests": ["unused"], "front_end_cache_mb": cache_mb},
                "model": {"encoder": {"size": "tiny", "mode": "adapters"},
                          "decoder": {"preset": "tiny"}, "length_adaptor_layers": 2},
            },
        )  # fmt: skip
        model = build_st_model(cfg, tokenizer).train()
        batch = STCollator(tokenizer, 64)(items)
        optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        seen = []
        torch.manual_seed(3)
        np.random.seed(3)
        for _ in range(3):
            out = model(
                batch.audio.input_values, batch.audio.attention_mask,
                batch.decoder_input_ids, batch.decoder_mask,
            )  # fmt: skip
            loss = torch.nn.functional.cross_entropy(
                out.logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100
            )
            optim.zero_grad()
            loss.backward()
            optim.step()
            seen.append(float(loss.detach()))
        return seen, model.front_end_cache

    plain, none = losses(0)
    cached, cache = losses(4)
    assert none is None and cache is not None
    assert (cache.stats.misses, cache.stats.hits) == (4, 8)
    assert plain[0] != plain[-1]  # it trains
    assert cached == pytest.approx(plain, rel=1e-5)


def test_distill_model_serves_its_encoder() -> None:
    torch.manual_seed(0)
    samu = SamuModel.from_config(EncoderConfig(size="tiny", mode="full"), out_dim=8)
    cache = FrontEndCache(2**20)
    model = DistillModel(samu, 0, cache).train()
    values, lengths = _batch(_waves())
    torch.manual_seed(1)
    np.random.seed(1)
    first = model(values, lengths).embedding
    torch.manual_seed(1)
    np.random.seed(1)
    second = model(values, lengths).embedding
    torch.testing.assert_close(first, second)
    assert (cache.stats.misses, cache.stats.hits) == (4, 4)
