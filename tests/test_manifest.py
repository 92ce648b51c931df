import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samu_st.data.manifest import (
    Utterance,
    read_manifest,
    resolve_audio,
    validate_record,
    write_manifest,
)
from samu_st.errors import DataError
from samu_st.languages import GROUPS, get_language, is_known_language


def utt(i: int = 0, **kw: object) -> Utterance:
    base = dict(
        id=f"u{i}",
        audio=f"audio/u{i}.wav",
        duration=1.5,
        language="fr",
        source_text="quarante-deux",
        target_text="forty-two",
        speaker="spk1",
        split="train",
    )
    base.update(kw)
    return Utterance(**base)  # type: ignore[arg-type]


def test_round_trip_and_relative_audio(tmp_path: Path) -> None:
    path = tmp_path / "m" / "train.jsonl"
    items = [utt(i) for i in range(3)] + [utt(9, source_text="ça «va» ✓")]
    assert write_manifest(path, items) == 4
    assert read_manifest(path) == items
    assert resolve_audio(items[0], path) == (tmp_path / "m" / "audio/u0.wav").resolve()


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "x"}', "missing field(s)"),
        (json.dumps({**utt().__dict__, "extra": 1}), "unknown field(s): extra"),
        (json.dumps({**utt().__dict__, "duration": "1.0"}), "must be a number"),
        (json.dumps({**utt().__dict__, "duration": -1}), "positive"),
        (json.dumps({**utt().__dict__, "language": "French!"}), "invalid language code"),
        (json.dumps({**utt().__dict__, "split": "val"}), "split must be one of"),
        (json.dumps({**utt().__dict__, "target_text": "x" * 10_000}), "10000 characters"),
    ],
)
def test_bad_line_reports_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(utt(0).to_json() + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_manifest(path)
    assert f"{path}:2:" in str(err.value)
    assert needle in str(err.value)


def test_duplicate_ids_non_utf8_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(utt(0).to_json() + "\n" + utt(0).to_json() + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl:2: duplicate id"):
        read_manifest(path)
    path.write_bytes(utt(0).to_json().encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"m\.jsonl:2: not UTF-8"):
        read_manifest(path)
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        read_manifest(tmp_path)


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=50)


@settings(max_examples=60, deadline=None)
@given(src=texts, tgt=texts, dur=st.floats(0.01, 1e4), spk=texts)
def test_any_valid_utterance_round_trips(src: str, tgt: str, dur: float, spk: str) -> None:
    u = utt(0, source_text=src, target_text=tgt, duration=dur, speaker=spk)
    assert validate_record(json.loads(u.to_json()), "m.jsonl", 1) == u


def test_languages_and_groups() -> None:
    assert GROUPS["high"] == ("fr", "de", "es", "ca")
    assert GROUPS["mid"] == ("fa", "it", "ru", "pt", "zh-CN")
    assert len(GROUPS["low"]) == 12
    assert get_language("zh-CN").name == "Chinese"
    assert is_known_language("en") and not is_known_language("xx")
    with pytest.raises(KeyError, match="unknown language code 'xx'"):
        get_language("xx")
