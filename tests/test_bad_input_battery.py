"""The bad-input battery of ``scripts/bad_input_battery.py`` as pytest cases (one per input).

Each case runs the real ``samu-st`` command line on a broken input; see the script's docstring
for what is checked. Known defects are ``xfail(strict=True)``: fixing one turns its case red
until the ``bug`` note is removed from the script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_battery() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "bad_input_battery.py"
    spec = importlib.util.spec_from_file_location("bad_input_battery", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


battery = _load_battery()


def _param(case: battery.Case) -> object:  # type: ignore[name-defined]
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.name, marks=marks)


def test_battery_covers_the_issue_list() -> None:
    names = {c.name for c in battery.CASES}
    assert len(names) == len(battery.CASES) >= 15
    for required in (
        "corrupt_mp3", "truncated_wav", "zero_byte_clip", "missing_clip", "clip_is_directory",
        "stereo", "rate_8k", "rate_48k", "thirty_minutes", "silence", "nan_samples",
        "tsv_not_utf8", "tsv_missing_column", "tsv_extra_tab", "empty_transcript",
        "transcript_10k_chars", "language_code_cli", "manifest_not_json", "config_unknown_key",
        "config_wrong_type",
    ):  # fmt: skip
        assert required in names


@pytest.mark.parametrize("case", [_param(c) for c in battery.CASES])
def test_bad_input(case: battery.Case, tmp_path: Path) -> None:  # type: ignore[name-defined]
    result = battery.run_case(case, tmp_path)
    assert not result.problems, f"{case.name}: {result.outcome}: {result.message}"


def test_real_entry_point_exit_code(tmp_path: Path) -> None:
    """One case through `python -m samu_st`: exit code 2 and the message on stderr."""
    case = next(c for c in battery.CASES if c.name == "tsv_not_utf8")
    result = battery.run_case(case, tmp_path, subprocess_mode=True)
    assert not result.problems
    assert (result.outcome, result.code) == ("error", 2)
    assert result.message.endswith("train.tsv:3: not UTF-8 text (byte 0xe9 at column 47)")


def test_script_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert battery.main(["manifest_not_json", "config_is_directory"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("case | outcome | message\n")
    assert "manifest_not_json | error | m.jsonl:2: not valid JSON" in out
    assert "config_is_directory | error | cfg.yaml: is a directory" in out
    assert "2 cases, 0 known bugs, 0 unexpected" in out
