"""Linear CTC probe of a frozen speech encoder (``samu-st probe``).

How informative are an encoder's features? Encode the train and test clips of a transcribed
corpus ONCE with the encoder frozen, then train, for every layer, a linear map from the
(standardised) frame features to characters with CTC, and report the character error rate of
greedy decoding on the test clips (mini-CoVoST: test speakers no encoder heard). Only the
linear heads train, on cached features, so the probe costs one forward pass over the corpus
plus seconds per layer; it compares encoders (random, briefly pretrained, the shipped
mini-XLS-R, a SAMU encoder) on exactly the same footing. Layer 0 is the input of the first
Transformer layer (the projected conv features); layer L the encoder's output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from samu_st.audio import load_audio
from samu_st.data.manifest import Utterance, read_manifest, resolve_audio
from samu_st.metrics import cer, wer
from samu_st.models.encoder import EncoderConfig, SpeechEncoder
from samu_st.steps.data import DataConfig, manifest_files
from samu_st.text import get_normalizer

Features = list[list[torch.Tensor]]  # [layer][utterance] (T, D)


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe reads and how long its linear heads train."""

    manifests: tuple[str, ...]  # corpus folders holding <split>/<lang>.jsonl, or .jsonl files
    languages: tuple[str, ...] = ("fr", "de", "es", "it")  # () = every language
    train_split: str = "train"
    test_split: str = "test"
    normalizer: str = "generic"  # samu_st.text normaliser of the transcripts
    epochs: int = 40  # passes of each linear head over the cached train features
    batch_size: int = 32  # utterances per update
    lr: float = 3e-3  # Adam
    seed: int = 0  # head initialisation, batch order, and a random encoder's weights


def read_split(cfg: ProbeConfig, split: str) -> list[tuple[Path, str]]:
    """(audio path, normalised transcript) of the split's transcribed clips."""
    data = DataConfig(manifests=cfg.manifests, split=split, languages=cfg.languages)
    norm = get_normalizer(cfg.normalizer)
    out: list[tuple[Path, str]] = []
    for manifest in manifest_files(data):
        utts: list[Utterance] = read_manifest(manifest)
        for u in utts:
            if u.source_text:
                out.append((resolve_audio(u, manifest), norm(u.source_text)))
    return out


@torch.no_grad()
def encode_layers(encoder: SpeechEncoder, paths: Sequence[Path]) -> Features:
    """Every layer's hidden states of each clip, one clip at a time (no padding at all)."""
    encoder.eval()
    layers: Features = []
    for path in paths:
        wav = torch.from_numpy(load_audio(path))
        wav = (wav - wav.mean()) / torch.sqrt(wav.var() + 1e-7)
        out = encoder.model(wav[None], output_hidden_states=True)
        states = out.hidden_states
        if not layers:
            layers = [[] for _ in states]
        for i, h in enumerate(states):
            layers[i].append(h[0].float())
    return layers


def _batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, n, size)]


def _padded(feats: Sequence[torch.Tensor], idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) right-padded features and their (B,) lengths."""
    lengths = torch.tensor([feats[i].shape[0] for i in idx])
    batch = nn.utils.rnn.pad_sequence([feats[i] for i in idx], batch_first=True)
    return batch, lengths


def greedy(logits: torch.Tensor, length: int, chars: Sequence[str]) -> str:
    """Collapse repeats, drop blanks (id 0); ``chars[i - 1]`` is label i."""
    ids = logits[:length].argmax(-1).tolist()
    out = [chars[i - 1] for j, i in enumerate(ids) if i != 0 and (j == 0 or ids[j - 1] != i)]
    return " ".join("".join(out).split())


def train_head(
    train: Sequence[torch.Tensor],
    targets: Sequence[list[int]],
    classes: int,
    cfg: ProbeConfig,
) -> nn.Linear:
    """A linear CTC head (blank = 0) trained on standardised frame features."""
    torch.manual_seed(cfg.seed)
    head = nn.Linear(train[0].shape[-1], classes)
    optim = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    for _ in range(cfg.epochs):
        for idx in _batches(len(train), cfg.batch_size, rng):
            x, lengths = _padded(train, idx)
            log_probs = head(x).log_softmax(-1).transpose(0, 1)  # (T, B, C)
            labels = [torch.tensor(targets[i]) for i in idx]
            loss = ctc(log_probs, torch.cat(labels), lengths,
                       torch.tensor([len(t) for t in labels]))  # fmt: skip
            optim.zero_grad()
            loss.backward()
            optim.step()
    return head


def probe_features(
    train: Features, test: Features, train_texts: Sequence[str], test_texts: Sequence[str],
    cfg: ProbeConfig,
) -> list[dict[str, float]]:  # fmt: skip
    """CER / WER on the test clips of a linear head per layer."""
    chars = sorted({c for t in train_texts for c in t})
    index = {c: i + 1 for i, c in enumerate(chars)}
    targets = [[index[c] for c in t] for t in train_texts]
    rows: list[dict[str, float]] = []
    for layer, (tr, te) in enumerate(zip(train, test, strict=True)):
        stacked = torch.cat(tr)
        mean, std = stacked.mean(0), stacked.std(0) + 1e-5
        tr_n = [(f - mean) / std for f in tr]
        te_n = [(f - mean) / std for f in te]
        keep = [i for i, f in enumerate(tr_n) if f.shape[0] >= len(targets[i])]
        head = train_head([tr_n[i] for i in keep], [targets[i] for i in keep], len(chars) + 1, cfg)
        with torch.no_grad():
            hyps = [greedy(head(f), f.shape[0], chars) for f in te_n]
        rows.append({"layer": layer, "cer": cer(hyps, list(test_texts)),
                     "wer": wer(hyps, list(test_texts))})  # fmt: skip
    return rows


def run_probe(encoder_cfg: EncoderConfig, cfg: ProbeConfig) -> dict[str, Any]:
    """Probe one encoder (``pretrained: null``: a random ``size`` preset seeded by cfg.seed)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    encoder = SpeechEncoder.from_config(encoder_cfg)
    train = read_split(cfg, cfg.train_split)
    test = read_split(cfg, cfg.test_split)
    rows = probe_features(
        encode_layers(encoder, [p for p, _ in train]),
        encode_layers(encoder, [p for p, _ in test]),
        [t for _, t in train],
        [t for _, t in test],
        cfg,
    )
    best = min(rows, key=lambda r: r["cer"])
    return {
        "encoder": encoder_cfg.pretrained or f"random {encoder_cfg.size} (seed {cfg.seed})",
        "train_clips": len(train),
        "test_clips": len(test),
        "layers": rows,
        "best_layer": best,
        "last_layer": rows[-1],
    }
