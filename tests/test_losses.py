"""Loss functions against hand-computed values and torch references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from samu_st.losses import cosine_distance_loss, ctc_loss, label_smoothed_nll_loss


def test_cosine_distance_hand_values() -> None:
    speech = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    text = torch.tensor([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    # cosines 1, -1, 0 -> distances 0, 2, 1 -> mean 1
    assert cosine_distance_loss(speech, text).item() == pytest.approx(1.0)
    angle = torch.tensor([[math.cos(0.3), math.sin(0.3)]])
    assert cosine_distance_loss(angle, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(
        1 - math.cos(0.3), abs=1e-6
    )
    with pytest.raises(ValueError):
        cosine_distance_loss(speech, text[:2])


def test_cosine_distance_gradient_is_finite_for_zero_vector() -> None:
    speech = torch.zeros(1, 3, requires_grad=True)
    loss = cosine_distance_loss(speech, torch.ones(1, 3))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert speech.grad is not None and torch.isfinite(speech.grad).all()


def test_ctc_loss_matches_torch_and_zero_infinity() -> None:
    torch.manual_seed(0)
    log_probs = torch.randn(2, 10, 5).log_softmax(-1)
    lengths = torch.tensor([10, 7])
    labels = torch.tensor([[1, 2, 3], [4, 4, -1]])
    label_lengths = torch.tensor([3, 2])
    reference = F.ctc_loss(
        log_probs.transpose(0, 1), labels.clamp(min=0), lengths, label_lengths, blank=0
    )
    ours = ctc_loss(log_probs, lengths, labels.clamp(min=0), label_lengths)
    torch.testing.assert_close(ours, reference)
    # 3 labels cannot fit into 2 frames: zero instead of inf
    impossible = ctc_loss(log_probs[:1, :2], torch.tensor([2]), labels[:1], torch.tensor([3]))
    assert impossible.item() == 0.0
    per_utt = ctc_loss(log_probs, lengths, labels.clamp(min=0), label_lengths, reduction="none")
    assert per_utt.shape == (2,)
    torch.testing.assert_close((per_utt / label_lengths).mean(), ours)


def test_ctc_single_frame_hand_value() -> None:
    # one frame, label "1": the only path emits 1, probability p(1) = 0.7
    log_probs = torch.tensor([[[0.2, 0.7, 0.1]]]).log()
    loss = ctc_loss(log_probs, torch.tensor([1]), torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.7), abs=1e-6)


def test_label_smoothed_nll_matches_torch_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 7)
    targets = torch.tensor([[1, 2, 3, -100], [4, -100, -100, -100], [0, 6, 5, 2]])
    for epsilon in (0.0, 0.1):
        loss, nll = label_smoothed_nll_loss(logits, targets, epsilon)
        ref = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), label_smoothing=epsilon)
        ref_nll = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(nll, ref_nll)
    loss_sum, nll_sum = label_smoothed_nll_loss(logits, targets, 0.1, reduction="sum")
    torch.testing.assert_close(loss_sum, loss * 8)
    torch.testing.assert_close(nll_sum, nll * 8)


def test_label_smoothed_nll_hand_value_and_all_padding() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    loss, nll = label_smoothed_nll_loss(logits, torch.tensor([[0]]), epsilon=0.3)
    smooth = -(math.log(0.5) + 2 * math.log(0.25)) / 3
    assert nll.item() == pytest.approx(-math.log(0.5), abs=1e-6)
    assert loss.item() == pytest.approx(0.7 * -math.log(0.5) + 0.3 * smooth, abs=1e-6)
    empty, empty_nll = label_smoothed_nll_loss(logits, torch.tensor([[-100]]), 0.1)
    assert empty.item() == 0.0 and empty_nll.item() == 0.0
