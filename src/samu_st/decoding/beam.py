"""Batched beam search for the speech translator: the hypotheses of transformers' ``generate()``
without its wasted work.

``generate(num_beams=K)`` on a ``SpeechEncoderDecoderModel`` copies the encoder states K times,
re-projects them (``enc_to_dec_proj``) at every step, re-indexes the cross-attention keys and
values of every beam at every step, and keeps decoding an utterance whose K finished
hypotheses can no longer change until the longest utterance of the batch is done. Here:

- the encoder, its projection and the decoder prefix (the model's mode,
  :func:`~samu_st.models.tokenizer.decoder_prefix`: 2 or 3 tokens) run once per utterance;
  the prefix's key/value cache is then expanded to K beams by index, once;
- the cross-attention keys/values are never re-indexed per step: beams never leave their
  utterance, so only the self-attention cache follows the beams;
- an utterance leaves the batch as soon as its hypotheses are final (nothing else changes
  for the others: rows are independent);
- greedy search (K = 1) picks the arg-max and stops at ``</s>``, as ``generate`` does.

Scores, candidates, length normalisation and stopping are those of transformers 5.x's
vectorised beam search (``GenerationMixin._beam_search`` with ``early_stopping=False``, no
sampling, no logits processors): at each step the top 2K continuations of the K running beams,
finished candidates among the top K scored ``sum log p / generated_length ** length_penalty``,
an utterance done once its K finished slots are full and the best running beam, normalised by
its current length, cannot beat the worst of them. tests/test_beam.py checks that the
hypotheses equal ``generate``'s on random models, batched and one by one.

The decoder is transformers' own ``MBartForCausalLM`` (or any causal LM with cross-attention
and an ``EncoderDecoderCache``), called step by step; no modeling code is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers import SpeechEncoderDecoderModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

NEG = -1.0e9  # "impossible" score, the constant transformers uses


@dataclass
class EncoderStates:
    """Encoder output of the active utterances, projected to the decoder size (what the
    decoder's cross-attention reads)."""

    states: torch.Tensor  # (N, T, D) one row per decoder row (utterance or beam)
    mask: torch.Tensor | None  # (N, T) 1 on real frames


def encode(
    model: SpeechEncoderDecoderModel, input_values: torch.Tensor, attention_mask: torch.Tensor
) -> EncoderStates:
    """Encoder states (B, T, D_dec) and frame mask (B, T), as ``SpeechEncoderDecoderModel``
    computes them for its decoder."""
    sedm = cast(Any, model)
    out = sedm.encoder(input_values, attention_mask=attention_mask)
    states = out[0]
    decoder_config = sedm.decoder.config
    if (
        sedm.encoder_output_dim != decoder_config.hidden_size
        and getattr(decoder_config, "cross_attention_hidden_size", None) is None
    ):
        states = sedm.enc_to_dec_proj(states)
    mask = sedm.encoder._get_feature_vector_attention_mask(states.shape[1], attention_mask)
    return EncoderStates(states, mask)


def _new_cache(model: SpeechEncoderDecoderModel) -> EncoderDecoderCache:
    config = cast(Any, model).decoder.config
    return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))


def _step(
    model: SpeechEncoderDecoderModel,
    tokens: torch.Tensor,
    enc: EncoderStates,
    cache: EncoderDecoderCache,
) -> torch.Tensor:
    """One decoder call: tokens (N, L) → float32 logits of the last position (N, V)."""
    out = cast(Any, model).decoder(
        input_ids=tokens,
        encoder_hidden_states=enc.states,
        encoder_attention_mask=enc.mask,
        cache=cache,  # transformers >= 5.24 (past_key_values is deprecated)
        use_cache=True,
    )
    return cast(torch.Tensor, out.logits[:, -1, :].float())


def _long(index: torch.Tensor) -> torch.LongTensor:
    """transformers types cache indices as ``LongTensor``; ours are int64 tensors."""
    return cast(torch.LongTensor, index)


def _select(enc: EncoderStates, rows: torch.Tensor) -> EncoderStates:
    mask = enc.mask.index_select(0, rows) if enc.mask is not None else None
    return EncoderStates(enc.states.index_select(0, rows), mask)


@torch.no_grad()
def greedy_search(
    model: SpeechEncoderDecoderModel,
    enc: EncoderStates,
    prefix: torch.Tensor,
    max_new_tokens: int,
    eos_id: int,
) -> list[list[int]]:
    """Arg-max decoding of B utterances; per row the prefix and the tokens up to ``</s>``."""
    batch = prefix.shape[0]
    seqs = [prefix[i].tolist() for i in range(batch)]
    active = torch.arange(batch, device=prefix.device)
    cache = _new_cache(model)
    tokens = prefix
    for _ in range(max_new_tokens):
        logits = _step(model, tokens, enc, cache)
        best = logits.argmax(dim=-1)
        for row, token in zip(active.tolist(), best.tolist(), strict=True):
            seqs[row].append(token)
        going = best != eos_id
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            cache.reorder_cache(_long(keep))
            enc, active, best = _select(enc, keep), active[keep], best[keep]
        tokens = best[:, None]
    return seqs


@dataclass
class _Beams:
    """Search state of A active utterances with K beams (transformers' layout)."""

    running: torch.Tensor  # (A, K, max_len) token ids of the running beams
    running_scores: torch.Tensor  # (A, K) sum of log-probabilities, float32
    finished: torch.Tensor  # (A, K, max_len) token ids of the best finished hypotheses
    finished_scores: torch.Tensor  # (A, K) length-normalised scores, NEG where empty
    finished_lengths: torch.Tensor  # (A, K) tokens in each finished hypothesis
    is_finished: torch.Tensor  # (A, K) bool, slot holds a real hypothesis
    improvable: torch.Tensor  # (A, 1) bool, the finished set may still change
    ids: torch.Tensor  # (A,) input row of each active utterance

    def take(self, keep: torch.Tensor) -> _Beams:
        return _Beams(*(t.index_select(0, keep) for t in vars(self).values()))


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor`` (A, N, ...) at positions ``index`` (A, M) of its second axis."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


@dataclass(frozen=True)
class _Search:
    """Constants of one search."""

    num_beams: int
    prompt: int  # prefix length P
    max_len: int  # P + max_new_tokens
    length_penalty: float
    eos_id: int


def _advance(
    s: _Search, beams: _Beams, log_probs: torch.Tensor, cur_len: int
) -> tuple[_Beams, torch.Tensor, bool]:
    """One step of the search for log-probs (A*K, V) of the running beams' next token.

    Returns the new state, the running beam each new beam continues (A*K flat row indices into
    the current rows) and whether every candidate hit a stopping criterion.
    """
    active, k = beams.running.shape[0], s.num_beams
    vocab = log_probs.shape[-1]
    scores = (log_probs.view(active, k, vocab) + beams.running_scores[:, :, None]).view(active, -1)
    top_scores, top_index = torch.topk(scores, k=2 * k)
    source = torch.div(top_index, vocab, rounding_mode="floor")  # (A, 2K) beam of each candidate
    top_tokens = top_index % vocab
    top_seqs = _gather(beams.running, source)
    top_seqs[:, :, cur_len] = top_tokens
    hits = (top_tokens == s.eos_id) | (cur_len + 1 >= s.max_len)
    # the running beams: the best K candidates that did not stop
    running_scores = top_scores + hits.to(torch.float32) * NEG
    keep = torch.topk(running_scores, k=k)[1]
    next_running = _gather(top_seqs, keep)
    next_running_scores = _gather(running_scores, keep)
    next_source = _gather(source, keep)
    # the finished hypotheses: stopped candidates among the top K, if they beat the finished ones
    top_k_mask = torch.arange(2 * k, device=hits.device) < k
    just_finished = hits & top_k_mask[None, :]
    candidates = top_scores / ((cur_len + 1 - s.prompt) ** s.length_penalty)
    candidates = candidates + (~beams.improvable).to(torch.float32) * NEG
    candidates = candidates + (~just_finished) * NEG
    lengths = torch.full_like(beams.finished_lengths[:, :1], cur_len + 1).expand(-1, 2 * k)
    merged_scores = torch.cat((beams.finished_scores, candidates), dim=1)
    best = torch.topk(merged_scores, k=k)[1]
    finished = _gather(torch.cat((beams.finished, top_seqs), dim=1), best)
    finished_scores = _gather(merged_scores, best)
    finished_lengths = _gather(torch.cat((beams.finished_lengths, lengths), dim=1), best)
    is_finished = _gather(torch.cat((beams.is_finished, just_finished), dim=1), best)
    # can the best running beam still beat the worst finished one? (transformers' heuristic)
    best_running = next_running_scores[:, :1] / ((cur_len + 1 - s.prompt) ** s.length_penalty)
    worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], NEG)
    improvable = beams.improvable & (best_running > worst).any(dim=-1, keepdim=True)
    rows = (next_source + torch.arange(active, device=hits.device)[:, None] * k).view(-1)
    new = _Beams(
        next_running,
        next_running_scores,
        finished,
        finished_scores,
        finished_lengths,
        is_finished,
        improvable,
        beams.ids,
    )
    return new, rows, bool(hits.all())


def _initial_beams(prefix: torch.Tensor, s: _Search) -> _Beams:
    batch, k, device = prefix.shape[0], s.num_beams, prefix.device
    running = torch.zeros((batch, k, s.max_len), dtype=torch.long, device=device)
    running[:, :, : s.prompt] = prefix[:, None, :]
    scores = torch.zeros((batch, k), dtype=torch.float32, device=device)
    scores[:, 1:] = NEG  # only the first beam starts: the others are copies of it
    return _Beams(
        running=running,
        running_scores=scores,
        finished=running.clone(),
        finished_scores=torch.full((batch, k), NEG, dtype=torch.float32, device=device),
        finished_lengths=torch.zeros((batch, k), dtype=torch.long, device=device),
        is_finished=torch.zeros((batch, k), dtype=torch.bool, device=device),
        improvable=torch.ones((batch, 1), dtype=torch.bool, device=device),
        ids=torch.arange(batch, device=device),
    )


def _collect(beams: _Beams, out: list[list[int]]) -> None:
    for i, row in enumerate(beams.ids.tolist()):
        out[row] = beams.finished[i, 0, : int(beams.finished_lengths[i, 0])].tolist()


@torch.no_grad()
def beam_search(
    model: SpeechEncoderDecoderModel,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix: torch.Tensor,
    *,
    num_beams: int = 5,
    max_new_tokens: int = 200,
    length_penalty: float = 1.0,
    eos_id: int,
) -> list[list[int]]:
    """Best hypothesis per utterance of a right-padded batch.

    Args:
        model: the translator (encoder, optional ``enc_to_dec_proj``, causal-LM decoder).
        input_values: waveforms (B, S); attention_mask: (B, S), 1 on real samples.
        prefix: (B, P) forced decoder prefix (e.g. ``[</s>, <src>, en_XX]``), on any device.
        num_beams: K; 1 is greedy search.
        max_new_tokens: tokens generated after the prefix at most.
        length_penalty: exponent of the generated length that divides finished scores.
        eos_id: the end-of-sentence token.

    Returns:
        per row, the prefix followed by the generated tokens (``</s>`` included when produced),
        the rows of ``generate()``'s output without their padding.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError("num_beams and max_new_tokens must be >= 1")
    prefix = prefix.to(input_values.device)  # built on the CPU by generation_prefix()
    enc = encode(model, input_values, attention_mask)
    if num_beams == 1:
        return greedy_search(model, enc, prefix, max_new_tokens, eos_id)
    s = _Search(
        num_beams, prefix.shape[1], prefix.shape[1] + max_new_tokens, length_penalty, eos_id
    )
    batch, k = prefix.shape[0], num_beams
    out: list[list[int]] = [[] for _ in range(batch)]
    beams = _initial_beams(prefix, s)
    cache = _new_cache(model)
    logits = _step(model, prefix, enc, cache)  # the prefix once per utterance
    expand = torch.arange(batch, device=prefix.device).repeat_interleave(k)
    cache.reorder_cache(_long(expand))
    enc = _select(enc, expand)
    log_probs = torch.log_softmax(logits, dim=-1).index_select(0, expand)
    cur_len = s.prompt
    while True:
        beams, rows, all_hit = _advance(s, beams, log_probs, cur_len)
        cur_len += 1
        done = ~beams.improvable[:, 0]
        if all_hit or bool(done.all()):
            _collect(beams, out)
            return out
        if bool(done.any()):
            _collect(beams.take(done.nonzero().squeeze(1)), out)
            keep = (~done).nonzero().squeeze(1)
            beams = beams.take(keep)
            kept_rows = (keep[:, None] * k + torch.arange(k, device=keep.device)).view(-1)
            rows = rows.view(-1, k).index_select(0, keep).view(-1)
            cache.cross_attention_cache.reorder_cache(_long(kept_rows))
            enc = _select(enc, kept_rows)
        cache.self_attention_cache.reorder_cache(_long(rows))
        tokens = beams.running[:, :, cur_len - 1].reshape(-1, 1)
        logits = _step(model, tokens, enc, cache)
        log_probs = torch.log_softmax(logits, dim=-1)
