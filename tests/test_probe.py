"""The linear CTC probe: it reads decodable features and does not invent them."""

from __future__ import annotations

import random

import torch

from samu_st.probe import ProbeConfig, greedy, probe_features


def _data(n: int, seed: int, informative: bool) -> tuple[list[torch.Tensor], list[str]]:
    """Utterances of 2-4 letters a-e; features: 3 frames per letter, one-hot of the letter
    (+ noise) when ``informative``, else noise alone; 1 silent frame between letters."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    feats, texts = [], []
    for _ in range(n):
        text = "".join(rng.choice("abcde") for _ in range(rng.randint(2, 4)))
        frames = []
        for ch in text:
            one_hot = torch.zeros(6)
            one_hot["abcde".index(ch)] = 1.0 if informative else 0.0
            frames += [one_hot] * 3 + [torch.zeros(6)]
        x = torch.stack(frames) + 0.1 * torch.randn(len(frames), 6, generator=gen)
        feats.append(x)
        texts.append(text)
    return feats, texts


def test_probe_decodes_informative_features_and_not_noise() -> None:
    cfg = ProbeConfig(manifests=(), epochs=30, batch_size=16, lr=2e-2)
    rows = {}
    for informative in (True, False):
        tr, tr_text = _data(120, 0, informative)
        te, te_text = _data(40, 1, informative)
        rows[informative] = probe_features([tr], [te], tr_text, te_text, cfg)[0]
    assert rows[True]["cer"] < 0.1, rows
    assert rows[False]["cer"] > 0.5, rows


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    ids = [0, 1, 1, 0, 1, 2, 2, 0]  # blank a a blank a b b blank
    logits = torch.nn.functional.one_hot(torch.tensor(ids), 3).float()
    assert greedy(logits, len(ids), ["a", "b"]) == "aab"
    assert greedy(logits, 3, ["a", "b"]) == "a"  # only the valid frames
