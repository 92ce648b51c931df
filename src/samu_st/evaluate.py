"""Evaluate a model folder on a manifest folder; translate or transcribe audio and manifests.

- :func:`evaluate_model` — every ``<split>/<lang>.jsonl`` of a manifest folder through a
  translator (BLEU per language with sacrebleu 13a, group means, TRFGap) or a CTC model
  (WER/CER with jiwer after the model's text normaliser); writes ``results.json``,
  ``results.md`` and plots (:func:`samu_st.report.write_results`) and ``hypotheses.jsonl``.
- :func:`utterances_from_inputs` / :func:`write_rows` — what ``samu-st translate`` and
  ``samu-st transcribe`` read (audio files or manifests) and write (TSV or JSON lines).

The model kind is told by its files: ``samu_translator.json`` (a
:func:`~samu_st.models.translator.save_translator` folder) or a ``config.json`` of a
``Wav2Vec2ForCTC`` with its ``vocab.json`` (:func:`~samu_st.models.ctc.save_ctc_model`).
A CTC folder may hold ``samu_ctc.json`` ``{"normalizer": NAME}`` naming the normaliser of its
training labels (:data:`samu_st.text.NORMALIZERS`); without it ``generic`` is used. Training
hours per language come from the model's ``train_hours.json`` when it has one.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, cast

import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from samu_st.atomic import write_text_atomic
from samu_st.audio import audio_info
from samu_st.data.collate import AudioBatch
from samu_st.data.manifest import Utterance, read_manifest, resolve_audio
from samu_st.decoding.ctc import CtcLmDecoder, ctc_greedy_decode
from samu_st.decoding.translate import (
    Decoded,
    DecodeOptions,
    Skipped,
    decode_utterances,
    translate_utterances,
)
from samu_st.errors import AudioError, DataError, ModelLoadError
from samu_st.metrics import GroupScores, bleu_by_language, cer, wer
from samu_st.models.loading import require_local_folder
from samu_st.report import AsrResults, Results, TranslationResults, write_results
from samu_st.text import Normalizer, get_normalizer

log = logging.getLogger(__name__)

ModelKind = Literal["translator", "ctc"]
TRANSLATOR_FILE = "samu_translator.json"
CTC_META = "samu_ctc.json"
TRAIN_HOURS = "train_hours.json"
HYPOTHESES = "hypotheses.jsonl"


@dataclass(frozen=True)
class EvalOptions:
    """What :func:`evaluate_model` evaluates and how it decodes."""

    split: str = "test"  # manifests read: MANIFEST_DIR/<split>/<lang>.jsonl
    name: str | None = None  # model name in tables; None: the model folder's name
    max_utterances: int | None = None  # first N utterances per language; None = all
    languages: tuple[str, ...] = ()  # only these languages; () = all
    decode: DecodeOptions = field(default_factory=DecodeOptions)  # beam search and batching
    lm: str | None = None  # CTC models: ARPA n-gram LM for beam search; None = greedy
    device: str = "cpu"  # torch device to decode on
    progress: bool = False  # tqdm progress bar
    skip_bad: bool = False  # skip (and count) unreadable clips instead of failing


class Row(NamedTuple):
    """One decoded utterance."""

    id: str
    language: str
    hypothesis: str
    reference: str | None  # None when unknown (raw audio input)


# -- model folders -----------------------------------------------------------------------------


def model_kind(folder: str | Path) -> ModelKind:
    """``translator`` or ``ctc``, from the files in ``folder``; ModelLoadError otherwise."""
    path = require_local_folder(folder, "model")
    if (path / TRANSLATOR_FILE).is_file():
        return "translator"
    config = path / "config.json"
    if config.is_file() and (path / "vocab.json").is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.get("model_type") == "wav2vec2" and "Wav2Vec2ForCTC" in (
            data.get("architectures") or []
        ):
            return "ctc"
        if data.get("samu_ctc_model"):  # models.family_ctc: HuBERT, WavLM, w2v-BERT, Whisper
            return "ctc"
    raise ModelLoadError(
        f"{path}: neither a speech translator ({TRANSLATOR_FILE}) nor a CTC model "
        "(config.json of a Wav2Vec2ForCTC with vocab.json)"
    )


def model_name(folder: str | Path) -> str:
    """The folder's name, or its parent's for a run's ``final`` folder."""
    path = Path(folder).resolve()
    return path.parent.name if path.name == "final" else path.name


def load_train_hours(folder: str | Path) -> dict[str, float] | None:
    """Training hours per language recorded with the model (``train_hours.json``), or None."""
    path = Path(folder) / TRAIN_HOURS
    if not path.is_file():
        return None
    try:
        hours = json.loads(path.read_text(encoding="utf-8"))["train_hours"]
        return {str(lang): float(h) for lang, h in hours.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(path, 'expected {"train_hours": {language: hours}}') from None


def ctc_normalizer(folder: str | Path) -> tuple[str, Normalizer]:
    """The text normaliser of a CTC model's training labels (see the module docstring)."""
    path = Path(folder) / CTC_META
    name = "generic"
    if path.is_file():
        meta = json.loads(path.read_text(encoding="utf-8"))
        name = str(meta.get("normalizer") or name)
    try:
        return name, get_normalizer(name)
    except KeyError as err:
        raise DataError(path, str(err.args[0])) from None


class CtcTranscriber:
    """A CTC model folder as a batch decoder: greedy, or beam search with an ARPA LM."""

    def __init__(self, folder: str | Path, lm: str | None = None, device: str = "cpu") -> None:
        from samu_st.models.ctc import load_ctc_model

        model, processor = load_ctc_model(folder)
        cast(torch.nn.Module, model).to(torch.device(device))
        self.model: Wav2Vec2ForCTC = model.eval()
        self.processor: Wav2Vec2Processor = processor
        self.tokenizer: Any = cast(Any, processor).tokenizer
        extractor: Any = cast(Any, processor).feature_extractor
        self.normalize = bool(getattr(extractor, "do_normalize", True))
        vocab = int(self.model.config.vocab_size)
        self.lm = CtcLmDecoder(self.tokenizer, lm, vocab) if lm is not None else None

    @torch.no_grad()
    def __call__(self, batch: AudioBatch) -> list[str]:
        device = next(self.model.parameters()).device
        out = self.model(
            batch.input_values.to(device), attention_mask=batch.attention_mask.to(device)
        )
        frames = self.model._get_feat_extract_output_lengths(cast(torch.LongTensor, batch.lengths))
        logits = out.logits.float().cpu()
        if self.lm is not None:
            return self.lm.decode(logits, frames)
        return ctc_greedy_decode(logits, frames, self.tokenizer)


def transcribe_utterances(
    transcriber: CtcTranscriber,
    utterances: Sequence[Utterance],
    options: DecodeOptions | None = None,
    *,
    progress: bool = False,
    skip_bad: bool = False,
) -> Decoded:
    """Transcripts of ``utterances`` in input order (batched like translation)."""
    opts = options or DecodeOptions()
    return decode_utterances(
        utterances,
        transcriber,
        max_duration=opts.max_duration,
        max_batch_size=opts.max_batch_size,
        normalize=transcriber.normalize,
        progress=progress,
        skip_bad=skip_bad,
        desc="transcribing",
    )


# -- inputs and outputs ------------------------------------------------------------------------


def _absolute(utterances: Iterable[Utterance], manifest: Path) -> list[Utterance]:
    return [replace(u, audio=str(resolve_audio(u, manifest))) for u in utterances]


def eval_manifests(
    manifest_dir: str | Path,
    split: str = "test",
    languages: Sequence[str] = (),
    max_utterances: int | None = None,
) -> list[Utterance]:
    """The utterances of ``manifest_dir/<split>/*.jsonl`` (audio paths made absolute), the
    first ``max_utterances`` of each language, only ``languages`` if given."""
    folder = Path(manifest_dir) / split
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise DataError(folder, f"no <lang>.jsonl manifests for split {split!r}")
    kept: list[Utterance] = []
    counts: dict[str, int] = defaultdict(int)
    for path in files:
        for utt in _absolute(read_manifest(path), path):
            if languages and utt.language not in languages:
                continue
            if max_utterances is not None and counts[utt.language] >= max_utterances:
                continue
            counts[utt.language] += 1
            kept.append(utt)
    if not kept:
        raise DataError(folder, f"no utterance selected (languages: {list(languages) or 'all'})")
    return kept


def _audio_utterance(path: Path, language: str | None) -> Utterance:
    info = audio_info(path)
    return Utterance(
        id=str(path),
        audio=str(path.resolve()),
        duration=info.duration,
        language=language or "",
        source_text="",
        target_text="",
        speaker="",
        split="test",
    )


def utterances_from_inputs(
    inputs: Sequence[str | Path],
    language: str | None = None,
    *,
    need_language: bool = False,
    skip_bad: bool = False,
) -> tuple[list[Utterance], list[Skipped]]:
    """Manifests (``.jsonl``) and audio files → utterances; audio files get ``language``.

    With ``need_language`` (translation) an audio file without ``language`` is an error. An
    unreadable audio file raises :class:`AudioError` naming it, or is skipped with ``skip_bad``.
    """
    utterances: list[Utterance] = []
    skipped: list[Skipped] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".jsonl":
            utterances += _absolute(read_manifest(path), path)
            continue
        if need_language and not language:
            raise DataError(path, "an audio file needs --language (manifests carry their own)")
        try:
            utterances.append(_audio_utterance(path, language))
        except AudioError as err:
            if not skip_bad:
                raise
            skipped.append(Skipped(str(path), str(err)))
    return utterances, skipped


def collect_rows(
    utterances: Sequence[Utterance], decoded: Decoded, reference: Literal["target", "source"]
) -> list[Row]:
    """Rows of the decoded utterances (skipped ones left out); empty references are unknown."""
    rows = []
    for utt, hyp in zip(utterances, decoded.hypotheses, strict=True):
        if hyp is None:
            continue
        ref = utt.target_text if reference == "target" else utt.source_text
        rows.append(Row(utt.id, utt.language, hyp, ref or None))
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split())  # no tab or newline can break a TSV row


def write_rows(rows: Sequence[Row], fmt: Literal["tsv", "jsonl"], handle: IO[str]) -> None:
    """``id, hypothesis[, reference]``: TSV with a header (the reference column only when some
    row has one) or JSON lines (``reference`` only where known)."""
    with_ref = any(r.reference is not None for r in rows)
    if fmt == "tsv":
        handle.write("id\thypothesis" + ("\treference" if with_ref else "") + "\n")
        for r in rows:
            cells = [r.id, r.hypothesis] + ([r.reference or ""] if with_ref else [])
            handle.write("\t".join(_cell(c) for c in cells) + "\n")
        return
    for r in rows:
        record = {"id": r.id, "hypothesis": r.hypothesis}
        if r.reference is not None:
            record["reference"] = r.reference
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_hypotheses(rows: Sequence[Row], path: str | Path) -> Path:
    """``hypotheses.jsonl``: one ``{id, language, hypothesis, reference}`` per line."""
    lines = []
    for r in rows:
        record = r._asdict()
        record["reference"] = r.reference or ""
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return write_text_atomic(path, "".join(lines), point="hypotheses")


# -- evaluation --------------------------------------------------------------------------------


def _by_language(rows: Sequence[Row]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    hyps: dict[str, list[str]] = defaultdict(list)
    refs: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        hyps[r.language].append(r.hypothesis)
        refs[r.language].append(r.reference or "")
    return dict(hyps), dict(refs)


def _report_skipped(decoded: Decoded) -> None:
    if decoded.skipped:
        log.warning("%d utterance(s) skipped (unreadable audio), not scored", len(decoded.skipped))


def evaluate_translator(
    model_dir: str | Path, manifest_dir: str | Path, out_dir: str | Path, options: EvalOptions
) -> TranslationResults:
    """BLEU of a translator folder on ``manifest_dir/<split>``; writes results and hypotheses."""
    from samu_st.models.translator import load_translator

    loaded = load_translator(model_dir, options.device)
    utts = eval_manifests(manifest_dir, options.split, options.languages, options.max_utterances)
    decoded = translate_utterances(
        loaded.model,
        loaded.tokenizer,
        utts,
        options.decode,
        progress=options.progress,
        skip_bad=options.skip_bad,
    )
    _report_skipped(decoded)
    rows = collect_rows(utts, decoded, "target")
    hyps, refs = _by_language(rows)
    scores, signature = bleu_by_language(hyps, refs)
    results = TranslationResults(
        model=options.name or model_name(model_dir),
        bleu=scores,
        sacrebleu_signature=signature,
        n_utterances={lang: len(v) for lang, v in hyps.items()},
        train_hours=load_train_hours(model_dir),
    )
    _write(results, rows, out_dir)
    return results


def evaluate_ctc(
    model_dir: str | Path, manifest_dir: str | Path, out_dir: str | Path, options: EvalOptions
) -> AsrResults:
    """WER/CER of a CTC folder on ``manifest_dir/<split>`` (references: source transcripts)."""
    transcriber = CtcTranscriber(model_dir, options.lm, options.device)
    name, normalizer = ctc_normalizer(model_dir)
    utts = eval_manifests(manifest_dir, options.split, options.languages, options.max_utterances)
    decoded = transcribe_utterances(
        transcriber, utts, options.decode, progress=options.progress, skip_bad=options.skip_bad
    )
    _report_skipped(decoded)
    rows = collect_rows(utts, decoded, "source")
    hyps, refs = _by_language(rows)
    wers = {lang: wer(hyps[lang], refs[lang], normalizer) for lang in hyps}
    cers = {lang: cer(hyps[lang], refs[lang], normalizer) for lang in hyps}
    results = AsrResults(
        model=options.name or model_name(model_dir),
        wer=GroupScores.from_per_language(wers),
        cer=GroupScores.from_per_language(cers),
        n_utterances={lang: len(v) for lang, v in hyps.items()},
        normalizer=name,
        train_hours=load_train_hours(model_dir),
    )
    _write(results, rows, out_dir)
    return results


def _write(results: Results, rows: Sequence[Row], out_dir: str | Path) -> None:
    paths = write_results(results, out_dir)
    write_hypotheses(rows, Path(out_dir) / HYPOTHESES)
    log.info("results written to %s", paths["json"])


def evaluate_model(
    model_dir: str | Path,
    manifest_dir: str | Path,
    out_dir: str | Path,
    options: EvalOptions | None = None,
) -> Results:
    """Evaluate a translator (BLEU) or CTC model (WER/CER), told apart by its files."""
    opts = options or EvalOptions()
    if model_kind(model_dir) == "translator":
        if opts.lm is not None:
            raise DataError(model_dir, "--lm applies to CTC models only")
        return evaluate_translator(model_dir, manifest_dir, out_dir, opts)
    return evaluate_ctc(model_dir, manifest_dir, out_dir, opts)
