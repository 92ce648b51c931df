"""The model card ``README.md`` of an exported folder: Hugging Face front matter (languages,
``pipeline_tag``, ``model-index`` with BLEU per language and group and the sacrebleu
signature, when a ``results.json`` is given), the training data and the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from samu_st.export.hf_config import ENCODER_MODEL_TYPE
from samu_st.languages import BY_CODE
from samu_st.metrics import GroupScores
from samu_st.report import TranslationResults

if TYPE_CHECKING:
    from samu_st.export.folder import ExportOptions

CARD = "README.md"
PREFIXES = "samu_language_prefixes"  # config.json key (samu_st.export.folder.PREFIXES_KEY)
TRAIN_META = "train_hours.json"  # written by step 3 into final/: manifests and hours


def _metric(name: str, value: float, signature: str) -> dict[str, Any]:
    return {"type": "bleu", "name": name, "value": round(value, 2), "args": signature}


def _result(lang: str, scores: GroupScores, signature: str) -> dict[str, Any]:
    metrics = [_metric(f"BLEU {lang}-en", scores.per_language[lang], signature)]
    return {
        "task": {"type": "automatic-speech-recognition", "name": f"Speech translation {lang}-en"},
        "dataset": {"type": "covost2", "name": "CoVoST 2", "config": f"{lang}_en"},
        "metrics": metrics,
    }


def model_index(name: str, results: TranslationResults) -> list[dict[str, Any]]:
    """The ``model-index`` entry: one result per language, plus the group means (High, Mid,
    Low BLEU and TRFGap) as one more result."""
    scores, signature = results.bleu, results.sacrebleu_signature
    entries = [_result(lang, scores, signature) for lang in sorted(scores.per_language)]
    groups = {"High": scores.high, "Mid": scores.mid, "Low": scores.low, "TRFGap": scores.trfgap}
    group_metrics = [_metric(f"BLEU {k}", v, signature) for k, v in groups.items() if v is not None]
    if group_metrics:
        entries.append(
            {
                "task": {"type": "automatic-speech-recognition", "name": "Speech translation X-en"},
                "dataset": {"type": "covost2", "name": "CoVoST 2", "config": "all"},
                "metrics": group_metrics,
            }
        )
    return [{"name": name, "results": entries}]


def _front_matter(name: str, languages: list[str], results: TranslationResults | None) -> str:
    meta: dict[str, Any] = {
        "language": sorted({lang.split("-")[0] for lang in languages} | {"en"}),
        "pipeline_tag": "automatic-speech-recognition",
        "library_name": "transformers",
        "tags": ["speech-translation", "samu-st", "wav2vec2", "mbart"],
        "datasets": ["covost2"],
    }
    if results is not None:
        meta["model-index"] = model_index(name, results)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def trained_languages(model_dir: Path) -> list[str]:
    """The languages step 3 trained on (from its ``train_hours.json``; [] if unrecorded)."""
    path = model_dir / TRAIN_META
    if not path.is_file():
        return []
    return sorted(json.loads(path.read_text(encoding="utf-8")).get("train_hours", {}))


def _training_data(model_dir: Path) -> list[str]:
    path = model_dir / TRAIN_META
    if not path.is_file():
        return ["Not recorded in the model folder."]
    meta = json.loads(path.read_text(encoding="utf-8"))
    lines = [f"- manifest `{m}`" for m in meta.get("manifests", [])]
    hours = meta.get("train_hours", {})
    lines += [f"- {lang}: {float(h):.2f} h of speech" for lang, h in sorted(hours.items())]
    return lines or ["Not recorded in the model folder."]


def _language_name(code: str) -> str:
    lang = BY_CODE.get(code)
    return f"{lang.name} ({code})" if lang is not None else code


def _body(
    name: str, model_dir: Path, config: dict[str, Any], language: str, opts: ExportOptions
) -> list[str]:
    languages = trained_languages(model_dir) or sorted(config[PREFIXES])
    adapters = config["encoder"]["model_type"] == ENCODER_MODEL_TYPE
    command = opts.command or f"export_translator({str(model_dir)!r}, {name!r})"
    load = "import samu_st  # registers the adapter encoder\n" if adapters else ""
    return [
        f"# {name}\n",
        "Speech translation to English (SAMU-XLS-R encoder, MBART decoder), trained with samu-st.",
        f"Source languages: {', '.join(_language_name(c) for c in languages)}.\n",
        "## Use\n",
        "```python",
        load + "from transformers import pipeline",
        f'asr = pipeline("automatic-speech-recognition", model="{name}")',
        'print(asr("clip.wav")["text"])',
        "```\n",
        f"`generation_config.json` forces the decoder prefix of **{language}**. For another "
        "language pass its prefix (`samu_language_prefixes` in `config.json`) as "
        '`generate_kwargs={"decoder_input_ids": [[...]]}`, or use '
        '`samu_st.SpeechTranslator.from_pretrained(dir).translate(paths, language="xx")`.\n',
        "## Training data\n",
        *_training_data(model_dir),
        "\n## How it was made\n",
        f"Exported from `{model_dir}` with:\n",
        f"```\n{command}\n```",
    ]


def write_model_card(
    folder: Path, name: str, model_dir: Path, language: str, opts: ExportOptions
) -> Path:
    """Write ``folder/README.md`` (``folder``: the exported files, config included) of the
    model ``name`` exported from ``model_dir`` with its generation prefix for ``language``."""
    results = TranslationResults.from_json(opts.results) if opts.results else None
    config = json.loads((folder / "config.json").read_text("utf-8"))
    languages = trained_languages(model_dir) or sorted(config[PREFIXES])
    text = _front_matter(name, languages, results) + "\n"
    text += "\n".join(_body(name, model_dir, config, language, opts)) + "\n"
    path = folder / CARD
    path.write_text(text, encoding="utf-8")
    return path
