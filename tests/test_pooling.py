"""Attention pooling with one learnable query: masking and padding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from samu_st.models.pooling import AttentionPooling


def _pooling(dim: int = 8) -> AttentionPooling:
    torch.manual_seed(0)
    pooling = AttentionPooling(dim)
    torch.nn.init.normal_(pooling.query, std=1.0)
    return pooling


def test_matches_hand_computed_attention() -> None:
    pooling = AttentionPooling(2)
    with torch.no_grad():
        pooling.query.copy_(torch.tensor([1.0, 0.0]))
    hidden = torch.tensor([[[2.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    # scores 2/sqrt(2) and 0 -> weights e^a / (e^a + 1) with a = sqrt(2)
    a = math.exp(math.sqrt(2))
    expected = torch.tensor([[2.0 * a / (a + 1), 4.0 / (a + 1)]])
    torch.testing.assert_close(pooling(hidden, mask), expected)
    assert pooling.weights(hidden, mask)[0, 2] == 0


def test_padding_invariance() -> None:
    pooling = _pooling()
    torch.manual_seed(1)
    utterance = torch.randn(1, 5, 8)
    alone = pooling(utterance, torch.ones(1, 5, dtype=torch.bool))
    batch = torch.randn(3, 11, 8)
    batch[1, :5] = utterance[0]
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[0], mask[1, :5], mask[2, :9] = True, True, True
    pooled = pooling(batch, mask)
    torch.testing.assert_close(pooled[1], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("value", [1e30, float("inf"), float("nan")])
def test_huge_or_invalid_padding_does_not_change_output(value: float) -> None:
    pooling = _pooling()
    hidden = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    reference = pooling(hidden, mask)
    hidden[0, 4:] = value
    out = pooling(hidden, mask)
    assert torch.equal(out, reference)
    out.sum().backward()
    assert torch.isfinite(pooling.query.grad).all()


def test_query_is_the_only_parameter_and_learns() -> None:
    pooling = _pooling(4)
    assert [n for n, _ in pooling.named_parameters()] == ["query"]
    hidden = torch.randn(2, 3, 4)
    pooling(hidden, torch.ones(2, 3, dtype=torch.bool)).pow(2).sum().backward()
    assert pooling.query.grad is not None and pooling.query.grad.abs().sum() > 0


def test_errors_for_empty_utterance_and_bad_shapes() -> None:
    pooling = _pooling(4)
    with pytest.raises(ValueError, match="no valid frame"):
        pooling(torch.randn(2, 3, 4), torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="expected hidden"):
        pooling(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
