"""results.json schema, results.md / report.md tables, PNG plots and `samu-st report`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from samu_st.cli import main
from samu_st.errors import DataError
from samu_st.metrics import GroupScores
from samu_st.report import (
    AsrResults,
    TranslationResults,
    group_table,
    load_results,
    report,
    write_results,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def _translation(name: str, per_language: dict[str, float]) -> TranslationResults:
    return TranslationResults(
        model=name,
        bleu=GroupScores.from_per_language(per_language),
        sacrebleu_signature=SIGNATURE,
        n_utterances={lang: 10 for lang in per_language},
        train_hours={lang: 0.5 * (i + 1) for i, lang in enumerate(per_language)},
    )


def _asr() -> AsrResults:
    return AsrResults(
        model="ctc-irish",
        wer=GroupScores.from_per_language({"ga-IE": 0.4321, "fr": 0.2}),
        cer=GroupScores.from_per_language({"ga-IE": 0.15, "fr": 0.05}),
        n_utterances={"ga-IE": 30, "fr": 12},
        normalizer="irish",
    )


def test_json_round_trip_and_exact_schema(tmp_path: Path) -> None:
    results = _translation("samu-A", {"fr": 30.0, "de": 20.0, "nl": 10.0})
    path = results.to_json(tmp_path / "results.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data) == {"model", "bleu", "sacrebleu_signature", "n_utterances", "train_hours"}
    assert data["bleu"] == {
        "per_language": {"fr": 30.0, "de": 20.0, "nl": 10.0},
        "high": 25.0,
        "mid": None,
        "low": 10.0,
        "trfgap": 15.0,
    }
    assert TranslationResults.from_json(path) == results
    assert load_results(path) == results
    asr_path = _asr().to_json(tmp_path / "asr.json")
    assert load_results(asr_path) == _asr()
    assert set(json.loads(asr_path.read_text())) == {
        "model",
        "wer",
        "cer",
        "n_utterances",
        "normalizer",
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("sacrebleu_signature"), "missing key"),
        (lambda d: d.update(extra=1), "unknown key"),
        (lambda d: d["bleu"].update(high="25"), "number or null"),
        (lambda d: d["bleu"]["per_language"].update(fr=None), "finite number"),
        (lambda d: d["n_utterances"].update(fr=1.5), "count"),
        (lambda d: d["bleu"].pop("trfgap"), "exactly the keys"),
        (lambda d: d.update(model=3), "string"),
    ],
)
def test_invalid_results_name_the_file(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    data = _translation("m", {"fr": 30.0}).to_dict()
    mutate(data)
    path = tmp_path / "bad_results.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=rf"bad_results\.json.*{message}"):
        load_results(path)


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n"model": "x",\n oops}', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json:3"):
        load_results(path)
    path.write_text('{"model": "x"}', encoding="utf-8")
    with pytest.raises(DataError, match="neither"):
        load_results(path)


def test_group_table_paper_shape() -> None:
    rows = [
        ("baseline", GroupScores.from_per_language({"fr": 30.04, "it": 12.0, "ja": 1.06})),
        ("samu", GroupScores.from_per_language({"fr": 31.0})),
    ]
    assert group_table(rows).splitlines() == [
        "| Model | High | Mid | Low | TRFGap |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| baseline | 30.0 | 12.0 | 1.1 | 29.0 |",
        "| samu | 31.0 | – | – | – |",
    ]


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000


def test_write_results_translation(tmp_path: Path) -> None:
    results = _translation("samu-A", {"fr": 30.0, "es": 25.0, "it": 18.0, "ta": 2.0, "ja": 4.0})
    paths = write_results(results, tmp_path / "out")
    assert sorted(paths) == ["groups_png", "hours_png", "json", "md"]
    md = paths["md"].read_text(encoding="utf-8")
    assert "| samu-A | 27.5 | 18.0 | 3.0 | 24.5 |" in md
    assert "| ta | low | 2.0 | 10 | 2.00 |" in md and SIGNATURE in md
    assert md.index("| fr |") < md.index("| es |") < md.index("| ja |")  # CoVoST order
    _assert_png(paths["groups_png"])
    _assert_png(paths["hours_png"])


def test_write_results_asr_percent_tables(tmp_path: Path) -> None:
    paths = write_results(_asr(), tmp_path)
    md = paths["md"].read_text(encoding="utf-8")
    assert "## WER (%) by resource group" in md and "| ctc-irish | 20.0 | – | – | – |" in md
    assert "| ga-IE | – | 43.2 | 15.0 | 30 |" in md  # Irish is in no CoVoST group
    assert "hours_png" in paths  # fr has CoVoST-2 hours; ga-IE is left out of the scatter


def test_report_side_by_side_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _translation("ctc-xlsr-A", {"fr": 20.0, "de": 18.0, "nl": 5.0}).to_json(tmp_path / "a.json")
    b = _translation("samu-xlsr-A", {"fr": 22.0, "de": 20.0, "nl": 9.0, "it": 12.0})
    b_path = b.to_json(tmp_path / "b.json")
    paths = report([a, b_path], tmp_path / "rep", title="Table 5")
    md = paths["md"].read_text(encoding="utf-8")
    assert "| ctc-xlsr-A | 19.0 | – | 5.0 | 14.0 |" in md
    assert "| samu-xlsr-A | 21.0 | 12.0 | 9.0 | 12.0 |" in md
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [m["model"] for m in data["models"]] == ["ctc-xlsr-A", "samu-xlsr-A"]
    _assert_png(paths["png"])

    asr = _asr().to_json(tmp_path / "asr.json")
    assert main(["report", str(a), str(asr), "--out", str(tmp_path / "cli"), "--title", "T"]) == 0
    out = capsys.readouterr().out
    assert "## BLEU" in out and "## WER (%)" in out and "| ctc-irish | 20.0 |" in out
    assert (tmp_path / "cli" / "report.png").is_file()
    assert main(["report", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "nope.json" in capsys.readouterr().err
