from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from samu_st.config import apply_overrides, from_dict, load_config, to_dict
from samu_st.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    mode: Literal["full", "adapters", "frozen"] = "full"


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 10
    factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    inner: Inner = field(default_factory=Inner)
    out: Path | None = None


def test_from_dict_builds_nested_and_converts() -> None:
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": 1, "mode": "adapters"}, "out": "a/b"})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.mode == "adapters"
    assert cfg.out == Path("a/b")
    assert to_dict(cfg)["inner"] == {"lr": 1.0, "mode": "adapters"}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "stpes": 3}, "unknown key(s) stpes"),
        ({"name": "x", "steps": "3"}, "config.steps: expected an integer"),
        ({"name": "x", "steps": True}, "config.steps: expected an integer"),
        ({"name": "x", "inner": {"mode": "half"}}, "config.inner.mode: must be one of"),
        ({"name": "x", "factors": "0.9"}, "config.factors: expected a list"),
        ({}, "missing required key(s) name"),
    ],
)
def test_from_dict_rejects_bad_input(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        from_dict(Outer, data)
    assert needle in str(err.value)


def test_load_config_with_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, path, ["inner.mode=frozen", "steps=7"])
    assert (cfg.steps, cfg.inner.mode, cfg.inner.lr) == (7, "frozen", 0.5)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_override_into_non_section_fails() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_load_step_config_picks_its_section(tmp_path: Path) -> None:
    from samu_st.config import load_step_config

    path = tmp_path / "all.yaml"
    path.write_text("distill:\n  name: d\n  steps: 3\ntrain_st:\n  whatever: 1\n")
    cfg = load_step_config(Outer, path, "distill", ["steps=4"])
    assert (cfg.name, cfg.steps) == ("d", 4)
    single = tmp_path / "one.yaml"
    single.write_text("name: solo\n")
    assert load_step_config(Outer, single, "distill").name == "solo"
    path.write_text("distill:\n  name: d\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"all\.yaml:distill: unknown key"):
        load_step_config(Outer, path, "distill")


def test_float_fields_accept_exponent_strings_that_yaml_reads_as_text(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) reads ``2e-3`` as a string; a float field takes it, text does not."""
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninner: {lr: 2e-3}\n")
    assert load_config(Outer, path).inner.lr == 0.002
    assert load_config(Outer, path, ["inner.lr=5E-4"]).inner.lr == 0.0005
    with pytest.raises(ConfigError, match=r"inner\.lr: expected a number"):
        from_dict(Outer, {"name": "x", "inner": {"lr": "fast"}})
