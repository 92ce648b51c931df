"""The cascade baseline of the paper's Table 4: CTC speech recognition, then MBART text
translation of the transcript into English.

:func:`evaluate_cascade` reads ``MANIFEST_DIR/<split>/<lang>.jsonl`` (of one folder or several)
like :func:`samu_st.evaluate.evaluate_model`, transcribes every clip with a CTC model folder
(greedy, or n-gram LM beam search with ``EvalOptions.lm``; duration-bucketed batches), puts each
transcript through the CTC model's text normaliser, translates it with an MBART text model
(beam search) and scores the translations with sacrebleu. It writes the same ``results.json``
(BLEU per language, group means, TRFGap) as every other system, plus the ASR half's WER/CER in
``asr/results.json``, and ``hypotheses.jsonl`` with the transcript of each utterance.
:func:`run_cascade` is the same chain on any utterances (``samu-st cascade translate``).

The MT folder is either

- ``samu`` format: written by ``samu-st pretrain-text`` with ``objective: translate`` (it holds
  ``samu_tokenizer.json``). The encoder reads ``transcript </s> <src>`` and the decoder starts
  from ``[</s>, <src>]``, the source-language token on both sides, as in training
  (:mod:`samu_st.steps.tasks_text`) and in step 3;
- ``mbart50`` format: a pristine MBART-50 many-to-one folder (the paper's cascade MT). The
  encoder reads ``<src> transcript </s>`` and the decoder starts from ``[</s>, en_XX]``, as
  MBART-50 was trained. The source tokens MBART-50 lacks (ca, cy) get new rows that start
  from a related code's (:data:`~samu_st.models.tokenizer.RELATED_MBART50`), so Catalan and
  Welsh are not one input.

Search: :func:`~samu_st.decoding.translate.search_config`, the end-to-end systems' settings,
never the MT checkpoint's ``generation_config`` (MBART-50's says ``early_stopping: true``,
``num_beams: 5``, ``max_length: 200`` and forces en_XX).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, cast

import torch
from tqdm import tqdm
from transformers import MBartForConditionalGeneration

from samu_st.atomic import write_text_atomic
from samu_st.data.manifest import Utterance
from samu_st.decoding.translate import (
    DecodeOptions,
    Skipped,
    generate_with,
    max_new_tokens_for,
    search_config,
)
from samu_st.evaluate import (
    CtcTranscriber,
    EvalOptions,
    Row,
    ctc_normalizer,
    eval_manifests,
    load_train_hours,
    transcribe_utterances,
    write_hypotheses,
)
from samu_st.metrics import GroupScores, bleu_by_language, cer, wer
from samu_st.models.decoder import resize_embeddings
from samu_st.models.encoder import lengths_to_mask
from samu_st.models.loading import load_pretrained_checked, require_pretrained_folder
from samu_st.models.tokenizer import (
    SIDECAR,
    PrefixMode,
    TargetTokenizer,
    generate_kwargs,
    prefix_length,
)
from samu_st.report import AsrResults, TranslationResults, write_results
from samu_st.text import Normalizer

log = logging.getLogger(__name__)

MtFormat = Literal["samu", "mbart50"]
ASR_DIR = "asr"  # subfolder of the evaluation with the ASR half's results
HYPOTHESES = "hypotheses.jsonl"


class TextTranslator(NamedTuple):
    """An MBART text translation model, its tokenizer and its input format."""

    model: MBartForConditionalGeneration
    tokenizer: TargetTokenizer
    format: MtFormat


def mt_format(folder: str | Path) -> MtFormat:
    """``samu`` for a folder written by ``pretrain-text`` (it has ``samu_tokenizer.json``),
    else ``mbart50`` (a pristine MBART-50 folder)."""
    return "samu" if (Path(folder) / SIDECAR).is_file() else "mbart50"


def load_text_translator(folder: str | Path, device: str = "cpu") -> TextTranslator:
    """Load an MBART text MT folder offline; a wrong-shaped or missing tensor is an error."""
    path = require_pretrained_folder(folder, "MBART MT model")
    tokenizer = TargetTokenizer.load(path)
    model, _ = load_pretrained_checked(MBartForConditionalGeneration, path, "MBART MT model")
    if model.config.vocab_size < len(tokenizer):  # MBART-50 + tokens for ca and cy
        resize_embeddings(model, len(tokenizer), tokenizer.related_token_ids())
    model = cast(MBartForConditionalGeneration, model.to(torch.device(device)).eval())
    return TextTranslator(model, tokenizer, mt_format(path))


def mt_source_ids(
    tokenizer: TargetTokenizer, text: str, lang: str, fmt: MtFormat, max_positions: int
) -> list[int]:
    """The encoder input of one transcript spoken in ``lang``.

    Words are tokenised one by one, as :class:`~samu_st.steps.tasks_text.TextDataset` does in
    training; the text is cut to fit ``max_positions`` with its two special tokens.
    """
    words = text.split()
    pieces = tokenizer.hf(words, add_special_tokens=False)["input_ids"] if words else []
    ids = [int(i) for piece in pieces for i in piece][: max_positions - 2]
    lang_id = tokenizer.lang_token_id(lang)
    if fmt == "samu":
        return [*ids, tokenizer.eos_id, lang_id]
    return [lang_id, *ids, tokenizer.eos_id]


def mt_prefix_mode(fmt: MtFormat) -> PrefixMode:
    """The decoder prefix: ``[</s>, <src>]`` as ``pretrain-text`` trains (``source``), or
    MBART-50's ``[</s>, en_XX]`` (``target``)."""
    return "source" if fmt == "samu" else "target"


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(B, S)`` ids and their ``(B, S)`` attention mask (1 on real tokens)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths_to_mask(lengths, ids.shape[1]).long()


@torch.no_grad()
def translate_texts(
    translator: TextTranslator,
    texts: Sequence[str],
    langs: Sequence[str],
    options: DecodeOptions | None = None,
    *,
    progress: bool = False,
) -> list[str]:
    """English translations of ``texts`` (source languages ``langs``), in input order.

    Beam search with ``options.num_beams``; batches of up to ``options.max_batch_size`` texts
    of similar length (padding never changes a row's output: the encoder is masked).
    """
    if len(texts) != len(langs):
        raise ValueError(f"{len(texts)} texts but {len(langs)} languages")
    opts = options or DecodeOptions()
    model, tok, fmt = translator
    positions = int(model.config.max_position_embeddings)
    mode = mt_prefix_mode(fmt)
    new_tokens = max_new_tokens_for(model, opts.max_new_tokens, prefix_length(mode))
    search = search_config(tok, opts.num_beams, opts.length_penalty, new_tokens)
    pairs = zip(texts, langs, strict=True)
    rows = [mt_source_ids(tok, text, lang, fmt, positions) for text, lang in pairs]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    size = opts.max_batch_size or max(len(rows), 1)
    device = next(model.parameters()).device
    out = [""] * len(rows)
    bar = tqdm(total=len(rows), desc="translating text", unit="utt", disable=not progress)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        ids, mask = pad_rows([rows[i] for i in chunk], tok.pad_id)
        generated = generate_with(
            model,
            search,
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **generate_kwargs(tok, [langs[i] for i in chunk], device, mode),
        )
        for i, text in zip(chunk, tok.batch_decode(generated.tolist()), strict=True):
            out[i] = text
        bar.update(len(chunk))
    bar.close()
    return out


@dataclass(frozen=True)
class CascadeOutput:
    """One utterance through the cascade."""

    utterance: Utterance
    transcript: str  # normalised ASR output, the MT input
    translation: str  # English MT output


@dataclass(frozen=True)
class Transcripts:
    """The ASR half: normalised transcripts of the utterances, in input order."""

    texts: list[str | None]  # None for a skipped (unreadable) clip
    normalizer_name: str  # the CTC model's text normaliser (samu_st.text.NORMALIZERS)
    normalizer: Normalizer
    skipped: list[Skipped]  # the clips left out and why


@dataclass(frozen=True)
class CascadeRun:
    """Utterances through ASR and MT; skipped clips are left out of ``outputs``."""

    outputs: list[CascadeOutput]  # in input order
    normalizer_name: str
    normalizer: Normalizer
    skipped: list[Skipped]


def transcribe(
    ctc_dir: str | Path, utterances: Sequence[Utterance], options: EvalOptions
) -> Transcripts:
    """Normalised transcripts of ``utterances`` (``None`` for skipped clips)."""
    transcriber = CtcTranscriber(ctc_dir, options.lm, options.device)
    name, normalizer = ctc_normalizer(ctc_dir)
    decoded = transcribe_utterances(
        transcriber,
        utterances,
        options.decode,
        progress=options.progress,
        skip_bad=options.skip_bad,
    )
    if decoded.skipped:
        log.warning("%d utterance(s) skipped (unreadable audio), not scored", len(decoded.skipped))
    # The normaliser is idempotent on the CTC alphabet; it also drops the ⁇ of [UNK] outputs.
    texts = [None if h is None else normalizer(h) for h in decoded.hypotheses]
    return Transcripts(texts, name, normalizer, list(decoded.skipped))


def run_cascade(
    ctc_dir: str | Path,
    mt_dir: str | Path,
    utterances: Sequence[Utterance],
    options: EvalOptions | None = None,
) -> CascadeRun:
    """ASR then MT of ``utterances`` (skipped clips left out), in input order."""
    opts = options or EvalOptions()
    asr = transcribe(ctc_dir, utterances, opts)
    kept = [(u, t) for u, t in zip(utterances, asr.texts, strict=True) if t is not None]
    translator = load_text_translator(mt_dir, opts.device)
    translations = translate_texts(
        translator,
        [t for _, t in kept],
        [u.language for u, _ in kept],
        opts.decode,
        progress=opts.progress,
    )
    outputs = [CascadeOutput(u, t, h) for (u, t), h in zip(kept, translations, strict=True)]
    return CascadeRun(outputs, asr.normalizer_name, asr.normalizer, asr.skipped)


def _by_language(pairs: Sequence[tuple[str, str, str]]) -> tuple[dict[str, list[str]], ...]:
    """(language, hypothesis, reference) triples → hypotheses and references per language."""
    hyps: dict[str, list[str]] = {}
    refs: dict[str, list[str]] = {}
    for lang, hyp, ref in pairs:
        hyps.setdefault(lang, []).append(hyp)
        refs.setdefault(lang, []).append(ref)
    return hyps, refs


def asr_results(
    outputs: Sequence[CascadeOutput], name: str, normalizer_name: str, normalizer: Normalizer
) -> AsrResults:
    """WER/CER of the ASR half against the source transcripts."""
    triples = [(o.utterance.language, o.transcript, o.utterance.source_text) for o in outputs]
    hyps, refs = _by_language(triples)
    return AsrResults(
        model=f"{name} (ASR)",
        wer=GroupScores.from_per_language({k: wer(hyps[k], refs[k], normalizer) for k in hyps}),
        cer=GroupScores.from_per_language({k: cer(hyps[k], refs[k], normalizer) for k in hyps}),
        n_utterances={k: len(v) for k, v in hyps.items()},
        normalizer=normalizer_name,
    )


def write_cascade_hypotheses(outputs: Sequence[CascadeOutput], path: str | Path) -> Path:
    """``{id, language, transcript, hypothesis, reference}`` per line."""
    lines = []
    for o in outputs:
        record = {
            "id": o.utterance.id,
            "language": o.utterance.language,
            "transcript": o.transcript,
            "hypothesis": o.translation,
            "reference": o.utterance.target_text,
        }
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return write_text_atomic(path, "".join(lines), point="cascade.hypotheses")


def cascade_manifests(
    manifests: str | Path | Sequence[str | Path], options: EvalOptions
) -> list[Utterance]:
    """The utterances of one or more manifest folders (``<folder>/<split>/<lang>.jsonl``),
    selected by ``options`` (split, languages, the first ``max_utterances`` per language of
    each folder), folder after folder."""
    folders = [manifests] if isinstance(manifests, str | Path) else list(manifests)
    select = (options.split, options.languages, options.max_utterances)
    return [u for folder in folders for u in eval_manifests(folder, *select)]


def evaluate_cascade(
    ctc_dir: str | Path,
    mt_dir: str | Path,
    manifest_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    options: EvalOptions | None = None,
) -> TranslationResults:
    """BLEU of CTC ASR → MBART MT on ``manifest_dir/<split>`` (one folder or several, see
    :func:`cascade_manifests`); writes ``out_dir/results.json`` (+ ``results.md``, plots),
    ``out_dir/hypotheses.jsonl`` and ``out_dir/asr/`` (WER/CER)."""
    opts = options or EvalOptions()
    run = run_cascade(ctc_dir, mt_dir, cascade_manifests(manifest_dir, opts), opts)
    outputs = run.outputs
    name = opts.name or "cascade"
    triples = [(o.utterance.language, o.translation, o.utterance.target_text) for o in outputs]
    hyps, refs = _by_language(triples)
    scores, signature = bleu_by_language(hyps, refs)
    results = TranslationResults(
        model=name,
        bleu=scores,
        sacrebleu_signature=signature,
        n_utterances={lang: len(v) for lang, v in hyps.items()},
        train_hours=load_train_hours(ctc_dir),
    )
    out = Path(out_dir)
    asr = asr_results(outputs, name, run.normalizer_name, run.normalizer)
    write_results(asr, out / ASR_DIR)
    asr_rows = [
        Row(o.utterance.id, o.utterance.language, o.transcript, o.utterance.source_text or None)
        for o in outputs
    ]
    write_hypotheses(asr_rows, out / ASR_DIR / HYPOTHESES)
    write_cascade_hypotheses(outputs, out / HYPOTHESES)
    write_results(results, out)  # last: results.json marks a finished evaluation
    log.info("cascade %s: BLEU %s, ASR WER %s", name, scores.per_language, asr.wer.per_language)
    return results
