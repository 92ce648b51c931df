"""The ``whisper`` row: a Whisper checkpoint's X→EN ``translate`` task, zero-shot, on the same
test sets and with the same BLEU as every other system.

A Whisper folder is what ``WhisperForConditionalGeneration.save_pretrained`` and
``WhisperProcessor.save_pretrained`` write (``openai/whisper-large-v2`` as downloaded, or
``packaged:whisper-base``, the converted Whisper base of :mod:`samu_st.models.whisper_convert`).
Nothing is trained: the row is the system a researcher would use instead of training one.

Decoding: the clips of one source language at a time, in batches of up to
``DecodeOptions.max_batch_size``; each clip becomes Whisper's 80- (or 128-) bin log-mel of a
30-second window (zero-padded: Whisper's encoder only takes 30 s, so a short clip costs as much
as a long one, and a clip longer than 30 s is cut to its first 30 s, with a warning). The
decoder prompt is forced to ``<|startoftranscript|><|xx|><|translate|><|notimestamps|>``
with ``xx`` the clip's language (:func:`whisper_language`: ``zh-CN`` → ``zh``, ``sv-SE`` →
``sv``), then beam search (``num_beams``, ``length_penalty``, ``max_new_tokens``) with the
checkpoint's suppressed tokens. A language the checkpoint has no token for (none of CoVoST-2's
21: Whisper's 99 cover them all; e.g. Irish ``ga``) is decoded with Whisper's own language
detection in place of the forced token, counted in the log, and scored like the rest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch

from samu_st.audio import SAMPLE_RATE
from samu_st.data.collate import AudioBatch
from samu_st.data.manifest import Utterance
from samu_st.decoding.translate import Decoded, DecodeOptions, Skipped, decode_utterances
from samu_st.errors import ModelLoadError
from samu_st.evaluate import EvalOptions, collect_rows, eval_manifests, write_hypotheses
from samu_st.metrics import bleu_by_language
from samu_st.models.loading import load_pretrained_checked, quiet_transformers
from samu_st.report import TranslationResults, write_results

log = logging.getLogger(__name__)

WINDOW_S = 30.0  # Whisper's encoder input: 30 s of audio, 3000 mel frames
PROMPT_TOKENS = 4  # <|startoftranscript|> <|xx|> <|translate|> <|notimestamps|>


def whisper_language(code: str, lang_to_id: dict[str, int]) -> str | None:
    """Whisper's code for a CoVoST-2 / Common Voice code (``zh-CN`` → ``zh``), or ``None``
    when the checkpoint has no ``<|xx|>`` token for it."""
    short = code.split("-")[0].lower()
    return short if f"<|{short}|>" in lang_to_id else None


class WhisperTranslator:
    """A Whisper folder as a batch translator into English (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        task: Literal["translate", "transcribe"] = "translate",  # into English, or ASR
    ) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        model, _ = load_pretrained_checked(WhisperForConditionalGeneration, folder, "Whisper")
        self.model: Any = model.to(torch.device(device)).eval()
        with quiet_transformers():
            self.processor: Any = WhisperProcessor.from_pretrained(
                str(folder), local_files_only=True
            )
        gen = self.model.generation_config
        if getattr(gen, "is_multilingual", None) is False:
            raise ModelLoadError(f"{folder}: an English-only Whisper cannot translate")
        if not getattr(gen, "lang_to_id", None) or not getattr(gen, "task_to_id", None):
            raise ModelLoadError(
                f"{folder}/generation_config.json: no lang_to_id / task_to_id (the token ids "
                "generate() needs for the language and the task)"
            )
        self.lang_to_id: dict[str, int] = dict(gen.lang_to_id)
        self.task = task
        self.max_positions = int(self.model.config.max_target_positions)

    def features(self, batch: AudioBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, mel bins, 3000)`` log-mel features of the batch's clips (unpadded first) and
        their ``(B, 3000)`` frame mask."""
        clips = [
            row[: int(n)].numpy() for row, n in zip(batch.input_values, batch.lengths, strict=True)
        ]
        extractor = self.processor.feature_extractor
        out = extractor(
            clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
        )
        return cast(torch.Tensor, out.input_features), cast(torch.Tensor, out.attention_mask)

    @torch.no_grad()
    def __call__(self, batch: AudioBatch, language: str | None, opts: DecodeOptions) -> list[str]:
        """English translations (or transcripts) of one batch; ``language``: Whisper's code,
        ``None`` to let Whisper detect it."""
        device = next(self.model.parameters()).device
        new_tokens = min(opts.max_new_tokens, self.max_positions - PROMPT_TOKENS - 1)
        features, mask = self.features(batch)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            generated = self.model.generate(
                features.to(device),
                attention_mask=mask.to(device),
                language=language,
                task=self.task,
                return_timestamps=False,
                num_beams=opts.num_beams,
                length_penalty=opts.length_penalty,
                max_length=PROMPT_TOKENS + new_tokens,  # the prompt counts
            )
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


def translate_with_whisper(
    translator: WhisperTranslator,
    utterances: Sequence[Utterance],
    options: DecodeOptions | None = None,
    *,
    progress: bool = False,
    skip_bad: bool = False,
) -> Decoded:
    """English translations of ``utterances`` in input order, one source language at a time
    (``None`` for skipped clips)."""
    opts = options or DecodeOptions()
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, utt in enumerate(utterances):
        groups[whisper_language(utt.language, translator.lang_to_id)].append(i)
    unknown = sorted({utterances[i].language for i in groups.get(None, [])})
    if unknown:
        log.warning("Whisper has no language token for %s: their %d clip(s) are decoded with "
                    "Whisper's language detection", unknown, len(groups[None]))  # fmt: skip
    longer = sum(u.duration > WINDOW_S for u in utterances)
    if longer:
        log.warning("%d clip(s) longer than %.0f s: Whisper reads their first %.0f s only",
                    longer, WINDOW_S, WINDOW_S)  # fmt: skip
    hypotheses: list[str | None] = [None] * len(utterances)
    skipped: list[Skipped] = []
    for language, indices in groups.items():
        decoded = decode_utterances(
            [utterances[i] for i in indices],
            lambda batch, lang=language: translator(batch, lang, opts),  # type: ignore[misc]
            max_duration=opts.max_batch_size * WINDOW_S if opts.max_batch_size else 1e9,
            max_batch_size=opts.max_batch_size,
            normalize=False,  # Whisper's log-mel takes the raw waveform
            progress=progress,
            skip_bad=skip_bad,
            desc=f"whisper {language or 'detect'}",
        )
        for i, hyp in zip(indices, decoded.hypotheses, strict=True):
            hypotheses[i] = hyp
        skipped += decoded.skipped
    return Decoded(hypotheses, skipped)


def evaluate_whisper(
    model_dir: str | Path,
    manifest_dir: str | Path,
    out_dir: str | Path,
    options: EvalOptions | None = None,
) -> TranslationResults:
    """BLEU of a Whisper folder's translate task on ``manifest_dir/<split>``; writes
    ``results.json`` (+ ``results.md``, plots) and ``hypotheses.jsonl`` into ``out_dir``."""
    opts = options or EvalOptions()
    translator = WhisperTranslator(model_dir, opts.device)
    utts = eval_manifests(manifest_dir, opts.split, opts.languages, opts.max_utterances)
    decoded = translate_with_whisper(
        translator, utts, opts.decode, progress=opts.progress, skip_bad=opts.skip_bad
    )
    if decoded.skipped:
        log.warning("%d utterance(s) skipped (unreadable audio), not scored", len(decoded.skipped))
    rows = collect_rows(utts, decoded, "target")
    hyps: dict[str, list[str]] = defaultdict(list)
    refs: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        hyps[r.language].append(r.hypothesis)
        refs[r.language].append(r.reference or "")
    scores, signature = bleu_by_language(dict(hyps), dict(refs))
    results = TranslationResults(
        model=opts.name or "whisper",
        bleu=scores,
        sacrebleu_signature=signature,
        n_utterances={lang: len(v) for lang, v in hyps.items()},
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_hypotheses(rows, out / "hypotheses.jsonl")
    write_results(results, out)  # last: results.json marks a finished evaluation
    return results
