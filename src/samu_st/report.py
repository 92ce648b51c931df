"""Results files (``results.json``), paper-style tables (markdown) and report folders.

``results.json`` of a speech translation model::

    {"model": str,
     "bleu": {"per_language": {lang: float}, "high": float|null, "mid": float|null,
              "low": float|null, "trfgap": float|null},
     "sacrebleu_signature": str,
     "n_utterances": {lang: int},
     "train_hours": {lang: float}}            # optional: x axis of the BLEU-vs-hours plot

of a speech recognition model: ``"wer"`` and ``"cer"`` (same shape as ``"bleu"``, values are
fractions, not percentages; TRFGap = High − Low is then negative when low-resource languages
are worse) instead of ``"bleu"`` and ``"sacrebleu_signature"``, plus an optional
``"normalizer"`` (the name of the text normaliser applied before scoring). Any other key is an
error, so a typo cannot silently drop a number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samu_st.atomic import write_text_atomic
from samu_st.errors import DataError
from samu_st.languages import BY_CODE, COVOST_CODES
from samu_st.metrics import GroupScores, is_finite_score
from samu_st.plots import plot_group_bars, plot_vs_hours

MISSING = "–"  # how a missing group mean is shown in tables (the paper's dash)


@dataclass(frozen=True)
class TranslationResults:
    """The evaluation of one speech translation model (the ``results.json`` schema)."""

    model: str  # model name shown in tables
    bleu: GroupScores  # sacrebleu BLEU-4 per language and per group
    sacrebleu_signature: str  # sacrebleu's signature of the BLEU settings
    n_utterances: dict[str, int]  # language -> number of evaluated utterances
    train_hours: dict[str, float] | None = None  # language -> hours of training speech

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "bleu": _scores_to_dict(self.bleu),
            "sacrebleu_signature": self.sacrebleu_signature,
            "n_utterances": dict(self.n_utterances),
        }
        if self.train_hours is not None:
            data["train_hours"] = dict(self.train_hours)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path) -> TranslationResults:
        _check_keys(data, {"model", "bleu", "sacrebleu_signature", "n_utterances"}, path)
        return cls(
            model=_string(data, "model", path),
            bleu=_scores_from_dict(data["bleu"], "bleu", path),
            sacrebleu_signature=_string(data, "sacrebleu_signature", path),
            n_utterances=_count_map(data["n_utterances"], "n_utterances", path),
            train_hours=_optional_hours(data, path),
        )

    def to_json(self, path: str | Path) -> Path:
        return _write_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, path: str | Path) -> TranslationResults:
        return cls.from_dict(_read_json(path), path)


@dataclass(frozen=True)
class AsrResults:
    """The evaluation of one speech recognition model; error rates are fractions."""

    model: str  # model name shown in tables
    wer: GroupScores  # word error rate per language and per group (jiwer)
    cer: GroupScores  # character error rate per language and per group (jiwer)
    n_utterances: dict[str, int]  # language -> number of evaluated utterances
    normalizer: str | None = None  # text normaliser applied to hypotheses and references
    train_hours: dict[str, float] | None = None  # language -> hours of training speech

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "wer": _scores_to_dict(self.wer),
            "cer": _scores_to_dict(self.cer),
            "n_utterances": dict(self.n_utterances),
        }
        if self.normalizer is not None:
            data["normalizer"] = self.normalizer
        if self.train_hours is not None:
            data["train_hours"] = dict(self.train_hours)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path) -> AsrResults:
        _check_keys(data, {"model", "wer", "cer", "n_utterances"}, path)
        normalizer = data.get("normalizer")
        if normalizer is not None and not isinstance(normalizer, str):
            raise DataError(path, '"normalizer" must be a string or null')
        return cls(
            model=_string(data, "model", path),
            wer=_scores_from_dict(data["wer"], "wer", path),
            cer=_scores_from_dict(data["cer"], "cer", path),
            n_utterances=_count_map(data["n_utterances"], "n_utterances", path),
            normalizer=normalizer,
            train_hours=_optional_hours(data, path),
        )

    def to_json(self, path: str | Path) -> Path:
        return _write_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, path: str | Path) -> AsrResults:
        return cls.from_dict(_read_json(path), path)


Results = TranslationResults | AsrResults
_OPTIONAL_KEYS = {"train_hours", "normalizer"}


def load_results(path: str | Path) -> Results:
    """Read a ``results.json`` of either kind; ``DataError`` naming the file if it is invalid."""
    data = _read_json(path)
    if "bleu" in data:
        return TranslationResults.from_dict(data, path)
    if "wer" in data:
        return AsrResults.from_dict(data, path)
    raise DataError(path, 'not a results file: it has neither "bleu" nor "wer"')


# ----------------------------------------------------------------------------- validation


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(path, f"cannot read: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"invalid JSON: {err.msg}", line=err.lineno) from None
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    if not isinstance(data, dict):
        raise DataError(path, "a results file must hold a JSON object")
    return data


def _write_json(data: Mapping[str, Any], path: str | Path) -> Path:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text, point=Path(path).name)


def _check_keys(data: Mapping[str, Any], required: set[str], path: str | Path) -> None:
    missing = sorted(required - set(data))
    if missing:
        raise DataError(path, f"missing key(s): {', '.join(missing)}")
    unknown = sorted(set(data) - required - _OPTIONAL_KEYS)
    if unknown:
        raise DataError(path, f"unknown key(s): {', '.join(unknown)}")


def _string(data: Mapping[str, Any], key: str, path: str | Path) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise DataError(path, f'"{key}" must be a string, got {type(value).__name__}')
    return value


def _score_map(value: object, where: str, path: str | Path) -> dict[str, float]:
    if not isinstance(value, dict):
        raise DataError(path, f'"{where}" must be an object {{language: number}}')
    for lang, score in value.items():
        if not is_finite_score(score):
            raise DataError(path, f'"{where}"["{lang}"] must be a finite number, got {score!r}')
    return {lang: float(score) for lang, score in value.items()}


def _count_map(value: object, where: str, path: str | Path) -> dict[str, int]:
    if not isinstance(value, dict):
        raise DataError(path, f'"{where}" must be an object {{language: integer}}')
    for lang, count in value.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise DataError(path, f'"{where}"["{lang}"] must be a count >= 0, got {count!r}')
    return dict(value)


def _optional_hours(data: Mapping[str, Any], path: str | Path) -> dict[str, float] | None:
    value = data.get("train_hours")
    return None if value is None else _score_map(value, "train_hours", path)


def _scores_from_dict(value: object, key: str, path: str | Path) -> GroupScores:
    if not isinstance(value, dict):
        raise DataError(path, f'"{key}" must be an object')
    fields = ("per_language", "high", "mid", "low", "trfgap")
    missing = [f for f in fields if f not in value]
    unknown = sorted(set(value) - set(fields))
    if missing or unknown:
        raise DataError(path, f'"{key}" needs exactly the keys {", ".join(fields)}')
    means: dict[str, float | None] = {}
    for field in fields[1:]:
        mean = value[field]
        if mean is not None and not is_finite_score(mean):
            raise DataError(path, f'"{key}"["{field}"] must be a number or null, got {mean!r}')
        means[field] = None if mean is None else float(mean)
    per_language = _score_map(value["per_language"], f"{key}.per_language", path)
    return GroupScores(
        per_language=per_language,
        high=means["high"],
        mid=means["mid"],
        low=means["low"],
        trfgap=means["trfgap"],
    )


def _scores_to_dict(scores: GroupScores) -> dict[str, Any]:
    return {
        "per_language": dict(scores.per_language),
        "high": scores.high,
        "mid": scores.mid,
        "low": scores.low,
        "trfgap": scores.trfgap,
    }


# ----------------------------------------------------------------------------- tables


def _metrics_of(results: Results) -> list[tuple[str, GroupScores, float]]:
    """(metric label, scores, display scale) for each metric a results object holds."""
    if isinstance(results, TranslationResults):
        return [("BLEU", results.bleu, 1.0)]
    return [("WER (%)", results.wer, 100.0), ("CER (%)", results.cer, 100.0)]


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value * scale:.1f}"


def group_table(rows: Sequence[tuple[str, GroupScores]], scale: float = 1.0) -> str:
    """The paper's table: ``| Model | High | Mid | Low | TRFGap |``, one decimal, "–" = missing."""
    lines = ["| Model | High | Mid | Low | TRFGap |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in rows:
        cells = [_fmt(v, scale) for v in (s.high, s.mid, s.low, s.trfgap)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _language_order(langs: Sequence[str]) -> list[str]:
    known = [code for code in COVOST_CODES if code in langs]
    return known + sorted(set(langs) - set(known))


def language_table(results: Results) -> str:
    """One row per evaluated language: group, every metric, utterances, training hours."""
    metrics = _metrics_of(results)
    header = ["Language", "Group"] + [label for label, _, _ in metrics] + ["Utterances"]
    hours = results.train_hours or {}
    if hours:
        header.append("Train hours")
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for lang in _language_order(list(metrics[0][1].per_language)):
        language = BY_CODE.get(lang)
        cells = [lang, language.group if language else MISSING]
        cells += [_fmt(scores.per_language.get(lang), scale) for _, scores, scale in metrics]
        count = results.n_utterances.get(lang)
        cells.append(MISSING if count is None else str(count))
        if hours:
            cells.append(f"{hours[lang]:.2f}" if lang in hours else MISSING)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_markdown(results: Results) -> str:
    """``results.md``: group table(s) in the paper's shape, then the per-language table."""
    parts = [f"# Results: {results.model}", ""]
    if isinstance(results, TranslationResults):
        parts += [f"sacrebleu signature: `{results.sacrebleu_signature}`", ""]
    elif results.normalizer:
        parts += [f"text normaliser: `{results.normalizer}` (jiwer on normalised text)", ""]
    for label, scores, scale in _metrics_of(results):
        table = group_table([(results.model, scores)], scale)
        parts += [f"## {label} by resource group", "", table, ""]
    parts += ["## Per language", "", language_table(results), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- folders


def _hours_for(results: Results) -> tuple[dict[str, float], str]:
    if results.train_hours:
        return results.train_hours, "training hours of the model's data (log scale)"
    covost = {code: lang.train_hours for code, lang in BY_CODE.items()}
    return covost, "CoVoST-2 X→EN training hours (log scale)"


def write_results(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``groups.png`` and (if any language has known
    training hours) ``hours.png`` into ``out_dir``; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": results.to_json(out / "results.json")}
    markdown = results_markdown(results)
    paths["md"] = write_text_atomic(out / "results.md", markdown, point="results.md")
    label, scores, scale = _metrics_of(results)[0]
    paths["groups_png"] = plot_group_bars(
        [(results.model, scores)], label, out / "groups.png", f"{label} by resource group", scale
    )
    hours, hours_label = _hours_for(results)
    title = f"{results.model}: {label} per language vs training data"
    hours_png = plot_vs_hours(
        scores.per_language, hours, label, out / "hours.png", title, hours_label, scale
    )
    if hours_png is not None:
        paths["hours_png"] = hours_png
    return paths


def report_markdown(all_results: Sequence[Results], title: str) -> str:
    """Several models side by side: one paper-style table per metric kind present."""
    parts = [f"# {title}", ""]
    translation = [r for r in all_results if isinstance(r, TranslationResults)]
    asr = [r for r in all_results if isinstance(r, AsrResults)]
    if translation:
        signatures = sorted({r.sacrebleu_signature for r in translation})
        parts += ["## BLEU", "", group_table([(r.model, r.bleu) for r in translation]), ""]
        parts += [f"sacrebleu signature: `{s}`" for s in signatures] + [""]
    if asr:
        parts += ["## WER (%)", "", group_table([(r.model, r.wer) for r in asr], 100.0), ""]
        parts += ["## CER (%)", "", group_table([(r.model, r.cer) for r in asr], 100.0), ""]
    return "\n".join(parts)


def report(
    results_files: Sequence[str | Path], out_dir: str | Path, title: str | None = None
) -> dict[str, Path]:
    """Put several ``results.json`` side by side: ``report.md``, ``report.json``, ``report.png``.

    The plot shows BLEU by group per model if any translation results are given, else WER.
    """
    if not results_files:
        raise ValueError("no results files given")
    all_results = [load_results(path) for path in results_files]
    title = title or "Results by resource group"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.md", report_markdown(all_results, title), point="report.md")
    data = {
        "title": title,
        "sources": [str(p) for p in results_files],
        "models": [r.to_dict() for r in all_results],
    }
    paths = {"md": out / "report.md", "json": _write_json(data, out / "report.json")}
    translation = [(r.model, r.bleu) for r in all_results if isinstance(r, TranslationResults)]
    if translation:
        rows, label, scale = translation, "BLEU", 1.0
    else:
        rows = [(r.model, r.wer) for r in all_results if isinstance(r, AsrResults)]
        label, scale = "WER (%)", 100.0
    paths["png"] = plot_group_bars(rows, label, out / "report.png", title, scale)
    return paths
