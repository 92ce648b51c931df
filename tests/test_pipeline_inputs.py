"""What the pipeline's stages read: step-2/CTC data (`pipeline.asr_data`), overrides of the step
sections from the command line, the global batch of an update, and input content identity."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from samu_st.config import from_dict
from samu_st.errors import ConfigError
from samu_st.pipeline import Context, Stage, execute, load_pipeline_config
from samu_st.pipeline_stages import build_stages, stage_ctc, stage_distill, step_config
from samu_st.plan import check_paths, update_seconds
from samu_st.steps.data import DataConfig, resolve_batching
from samu_st.steps.train_st import TrainSTConfig
from test_pipeline import tiny_steps


def write_grid(tmp: Path, **pipeline: Any) -> Path:
    steps = tiny_steps()
    for section in ("distill", "train_ctc"):
        steps[section]["data"] = {"manifests": [str(tmp / "cv")], "max_duration": 6.0}
    steps["distill"]["dev"] = {"manifests": [str(tmp / "cv")], "split": "dev"}
    (tmp / "steps.yaml").write_text(yaml.safe_dump(steps))
    base = {"out_dir": str(tmp / "out"), "steps": str(tmp / "steps.yaml"),
            "corpus": {"kind": "manifests", "path": str(tmp / "covost")},
            "encoder_pretrained": str(tmp / "xlsr"),
            "systems": ["samu-xlsr-A", "ctc-xlsr-F"]}  # fmt: skip
    (tmp / "grid.yaml").write_text(yaml.safe_dump({"pipeline": {**base, **pipeline}}))
    return tmp / "grid.yaml"


def resolved(stage_fn: Any, module: str, runner: str, ctx: Context, mp: pytest.MonkeyPatch) -> Any:
    """The step config ``stage_fn`` would train with (the step itself is not run)."""
    seen: list[Any] = []
    mp.setattr(f"samu_st.steps.{module}.{runner}", lambda cfg, resume: seen.append(cfg) or ctx.root)
    stage_fn(ctx)
    return seen[0]


@pytest.mark.parametrize("asr_data", ["section", "corpus"])
def test_step2_and_ctc_read_the_configured_transcribed_speech(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asr_data: str
) -> None:
    cfg = load_pipeline_config(write_grid(tmp_path, asr_data=asr_data))
    ctx = Context(cfg, tmp_path / "out", {"corpus": tmp_path / "covost"})
    distill = resolved(stage_distill, "distill", "run_distill", ctx, monkeypatch)
    ctc = resolved(stage_ctc, "train_ctc", "run_train_ctc", ctx, monkeypatch)
    want = str(tmp_path / ("cv" if asr_data == "section" else "covost"))
    assert distill.data.manifests == (want,) and distill.dev.manifests == (want,)
    assert ctc.data.manifests == (want,)


def test_dry_run_checks_the_transcribed_speech_paths(tmp_path: Path) -> None:
    cfg = load_pipeline_config(write_grid(tmp_path, asr_data="section"))
    where = {p.where: p.message for p in check_paths(cfg)}
    assert "distill.data.manifests" in where and "train_ctc.data.manifests" in where
    assert str(tmp_path / "cv") in where["distill.data.manifests"]
    (tmp_path / "cv" / "train").mkdir(parents=True)
    (tmp_path / "cv" / "train" / "fr.jsonl").write_text("")
    assert not [p for p in check_paths(cfg) if p.where.endswith(".data.manifests")]
    # distill's dev reads cv/dev, which an import of validated.tsv alone does not make
    assert [p.where for p in check_paths(cfg) if ".dev." in p.where] == ["distill.dev.manifests"]


def test_step_section_overrides_from_the_command_line(tmp_path: Path) -> None:
    grid = write_grid(tmp_path)
    cfg = load_pipeline_config(grid, ["train_st.train.max_steps=3", "beam=4"])
    assert cfg.beam == 4
    st = step_config(TrainSTConfig, cfg, "train_st", [f"out_dir={tmp_path}"])
    assert st.train.max_steps == 3
    # and the override is part of the stage's key (a changed value reruns the stage)
    fp = {s.name: s.fingerprint for s in build_stages(cfg)}
    assert fp["st:samu-xlsr-A"]["section"]["train"]["max_steps"] == 3
    with pytest.raises(ConfigError, match="no_such_key"):
        load_pipeline_config(grid, ["no_such_key=1"])
    bad = load_pipeline_config(grid, ["train_st.train.no_such=1"])
    with pytest.raises(ConfigError, match="no_such"):
        step_config(TrainSTConfig, bad, "train_st", [])


def test_update_duration_is_global_and_split_into_accumulation() -> None:
    data = DataConfig(update_duration=600.0, max_duration=100.0)
    one, eight = resolve_batching(data, 1, 1), resolve_batching(data, 1, 8)
    assert (one.grad_accum, one.micro_duration) == (6, 100.0)
    assert (eight.grad_accum, eight.micro_duration) == (1, 75.0)
    assert one.update_duration == pytest.approx(600.0) == eight.update_duration
    assert (
        resolve_batching(DataConfig(update_duration=600.0, max_duration=120.0), 1, 2).grad_accum
        == 3
    )
    unset = resolve_batching(DataConfig(max_duration=60.0), 2, 8)  # per process: 8x the speech
    assert (unset.grad_accum, unset.update_duration) == (2, 960.0)
    with pytest.raises(ConfigError, match="grad_accum"):
        resolve_batching(data, 2, 1)
    # the GPU-hour estimate counts the speech of one update over all GPUs
    assert update_seconds({"update_duration": 600.0, "max_duration": 600.0}, 1, 8) == 600.0
    assert update_seconds({"max_duration": 600.0}, 1, 8) == 4800.0


def test_paper_config_batches_ten_minutes_per_update() -> None:
    paper = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    raw = yaml.safe_load(paper.read_text())
    data = from_dict(DataConfig, raw["train_st"]["data"], where="paper")
    for world in (1, 8):
        assert resolve_batching(data, 1, world).update_duration == pytest.approx(600.0)
    assert raw["pipeline"]["asr_data"] == "section"


def test_a_replaced_input_reruns_its_stage_and_what_depends_on_it(tmp_path: Path) -> None:
    ckpt = tmp_path / "xlsr"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"old weights")
    runs: list[str] = []

    def make(name: str) -> Any:
        def run(ctx: Context) -> Path:
            runs.append(name)
            out = ctx.out(name)
            out.mkdir(parents=True, exist_ok=True)
            return out

        return run

    stages = [Stage("a", (), make("a"), "a", {"x": 1}, inputs=(str(ckpt),)),
              Stage("b", ("a",), make("b"), "b", {})]  # fmt: skip
    cfg = load_pipeline_config(write_grid(tmp_path))
    say = lambda _s: None  # noqa: E731
    execute(stages, Context(cfg, tmp_path / "o"), say)
    execute(stages, Context(cfg, tmp_path / "o"), say)
    assert runs == ["a", "b"]
    stat = (ckpt / "model.safetensors").stat()
    (ckpt / "model.safetensors").write_bytes(b"new weights")  # same path, same size
    os.utime(ckpt / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    execute(stages, Context(cfg, tmp_path / "o"), say)
    assert runs == ["a", "b", "a", "b"]
    marker = json.loads((tmp_path / "o" / "stages" / "a.json").read_text())
    assert list(marker["inputs"]) == [str(ckpt)]


def test_paper_stages_hash_their_outside_inputs(tmp_path: Path) -> None:
    cfg = load_pipeline_config(write_grid(tmp_path, asr_data="section"))
    inputs = {s.name: s.inputs for s in build_stages(cfg)}
    assert inputs["corpus"] == (str(tmp_path / "covost"),)
    assert str(tmp_path / "xlsr") in inputs["distill"] and str(tmp_path / "cv") in inputs["distill"]
    assert str(tmp_path / "cv") in inputs["ctc"]
    assert str(tmp_path / "xlsr") in inputs["st:samu-xlsr-A"]


def test_dry_run_finds_a_teacher_transformer_in_its_subfolder(tmp_path: Path) -> None:
    from samu_st.plan import check_folder, transformer_folder

    folder = tmp_path / "labse"
    (folder / "0_Transformer").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path":
        "0_Transformer", "type": "sentence_transformers.models.Transformer"}]))  # fmt: skip
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        (folder / "0_Transformer" / name).write_text("{}")
    assert transformer_folder(folder) == folder / "0_Transformer"
    needs = ("config.json", "weights", "tokenizer_config.json")
    assert check_folder(str(transformer_folder(folder)), "text teacher", needs) is None
    assert check_folder(str(folder), "text teacher", needs) is not None  # what it checked before
