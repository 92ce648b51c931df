"""The experiment grid on a tiny corpus: stages run in order, finished stages are reused, the
report holds the paper's tables, and --dry-run explains what is missing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from samu_st.cli import main
from samu_st.data.mini_covost import MiniCovostConfig
from samu_st.pipeline import load_pipeline_config, select
from samu_st.pipeline_stages import build_stages

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TINY = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0}
QUIET = {"tensorboard": False, "progress_bar": False, "log_every": 1, "save_every": 100}


def tiny_steps() -> dict:
    data = {"manifests": ["X"], "max_duration": 6.0}
    dev = {"manifests": ["X"], "split": "dev", "max_duration": 10.0}
    return {
        "pretrain": {
            "out_dir": "X",
            "data": data,
            "encoder": {"size": "tiny", "train_feature_encoder": True, "mask_time_prob": 0.05},
            "masking": {"mask_length": 2, "mask_prob": 0.4},
            "train": {"max_steps": 2, **QUIET},
        },
        "distill": {
            "out_dir": "X",
            "data": data,
            "dev": dev,
            "encoder": {"size": "tiny", **TINY},
            "teacher": {"pooling": "mean", "text_field": "target_text"},
            "train": {"max_steps": 2, **QUIET},
        },
        "pretrain_text": {
            "out_dir": "X",
            "data": {"manifests": ["X"]},
            "vocab_size": 60,
            "preset": "tiny",
            "train": {"max_steps": 2, **QUIET},
        },
        "train_st": {
            "out_dir": "X",
            "data": data,
            "model": {
                "encoder": {"size": "tiny", "mode": "adapters"},
                "decoder": {"preset": "tiny"},
            },
            "train": {"max_steps": 2, **QUIET},
            "val_bleu_utterances": 0,
        },
        # cascade (ASR → MT), paper Table 4: the CTC model and the text MT it feeds
        "train_ctc": {
            "out_dir": "X",
            "data": data,
            "encoder": {"size": "tiny", **TINY},
            "train": {"max_steps": 2, **QUIET},
        },
        "train_mt": {
            "out_dir": "X",
            "data": {"manifests": ["X"]},
            "objective": "translate",
            "train": {"max_steps": 2, **QUIET},
        },
    }


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: two contend badly on a busy 2-core machine (cascade helper's change)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_tiny_grid(
    root: Path,
    systems: list[str],
    tables: list[str],
    steps: dict | None = None,
    seed: int = 1,
    train: int = 6,
) -> Path:
    """A 2-language tiny mini-CoVoST grid under ``root``; returns ``root/grid.yaml``."""
    mini = MiniCovostConfig(
        seed=seed,
        languages=("fr", "de"),
        number_max=12,
        train_per_hour=0.0,
        train_min=train,
        train_max=train,
        dev_per_language=2,
        test_per_language=2,
        unlabeled_per_language=2,
        train_speakers=3,
        dev_speakers=1,
        test_speakers=1,
    )
    (root / "mini.yaml").write_text(yaml.safe_dump(dict(vars(mini))))
    (root / "steps.yaml").write_text(yaml.safe_dump(steps or tiny_steps()))
    pipeline = {
        "out_dir": str(root / "out"),
        "steps": str(root / "steps.yaml"),
        "corpus": {
            "kind": "mini",
            "path": str(root / "corpus"),
            "mini_config": str(root / "mini.yaml"),
        },
        "systems": systems,
        "tables": tables,
        "beam": 2,
    }
    (root / "grid.yaml").write_text(yaml.safe_dump({"pipeline": pipeline}))
    return root / "grid.yaml"


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grid")
    systems = ["xlsr-A", "samu-xlsr-A", "cascade", "zs-samu-xlsr-A"]
    write_tiny_grid(root, systems, ["table4", "table6", "table7"])
    return root


def test_stage_plan_and_only(grid: Path) -> None:
    cfg = load_pipeline_config(grid / "grid.yaml")
    names = [s.name for s in build_stages(cfg)]
    assert names[:6] == ["corpus", "pretrain", "distill", "ctc", "pretrain_text", "mt"]
    assert "st:zs-samu-xlsr-A" in names and names[-1] == "report"
    only = [s.name for s in select(build_stages(cfg), ["xlsr-A"])]
    assert only == ["corpus", "pretrain", "pretrain_text", "st:xlsr-A", "eval:xlsr-A"]
    cascade = [s.name for s in select(build_stages(cfg), ["cascade"])]
    assert cascade == ["corpus", "pretrain", "ctc", "pretrain_text", "mt", "eval:cascade"]


def test_pipeline_runs_then_reuses_finished_stages(
    grid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pipeline", str(grid / "grid.yaml")]) == 0
    report = json.loads((grid / "out" / "report" / "report.json").read_text())
    models = ["xlsr-A", "samu-xlsr-A", "cascade", "zs-samu-xlsr-A"]
    assert [m["model"] for m in report["models"]] == models
    for model in report["models"]:
        assert set(model["bleu"]) == {"per_language", "high", "mid", "low", "trfgap"}
        assert model["bleu"]["mid"] is None  # no mid-resource language in this corpus
        assert model["n_utterances"] == {"fr": 2, "de": 2}
    assert (grid / "out" / "report" / "table7" / "report.md").is_file()
    table4 = json.loads((grid / "out" / "report" / "table4" / "report.json").read_text())
    assert [m["model"] for m in table4["models"]] == ["cascade", "samu-xlsr-A"]
    assert "| cascade |" in (grid / "out" / "report" / "table4" / "report.md").read_text()
    # the cascade's ASR half is scored too (WER per language)
    asr = json.loads((grid / "out" / "eval" / "cascade" / "asr" / "results.json").read_text())
    assert set(asr["wer"]["per_language"]) == {"fr", "de"}
    capsys.readouterr()
    assert main(["pipeline", str(grid / "grid.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier") == 14, out


def test_dry_run_names_what_is_missing(grid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = grid / "missing-encoder"
    (bad / "config.json").parent.mkdir(exist_ok=True)
    (bad / "config.json").write_text('{"model_type": "wav2vec2"}')
    code = main(
        [
            "pipeline",
            str(grid / "grid.yaml"),
            f"encoder_pretrained={bad}",
            f"decoder_pretrained={grid / 'nope'}",
            "--dry-run",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}: not a wav2vec2 encoder folder, missing model.safetensors" in err
    assert f"{grid / 'nope'}: folder does not exist" in err


def test_changed_step_config_sets_old_folder_aside_instead_of_resuming(
    grid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stage re-run under a changed config must train anew, not resume (or return as finished)
    the old config's checkpoints; the old folder is kept beside it."""
    assert main(["pipeline", str(grid / "grid.yaml"), "--only", "xlsr-A"]) == 0
    steps = tiny_steps()
    steps["train_st"]["train"]["max_steps"] = 3  # was 2: resuming would log only step 3
    (grid / "steps3.yaml").write_text(yaml.safe_dump(steps))
    data = yaml.safe_load((grid / "grid.yaml").read_text())
    data["pipeline"]["steps"] = str(grid / "steps3.yaml")
    (grid / "grid3.yaml").write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["pipeline", str(grid / "grid3.yaml"), "--only", "xlsr-A"]) == 0
    out = capsys.readouterr().out
    assert "st:xlsr-A: step 3" in out and "moved to" in out, out
    folder = grid / "out" / "st" / "xlsr-A"
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("kind") == "train"] == [1, 2, 3]
    aside = [p for p in folder.parent.iterdir() if p.name.startswith("xlsr-A.replaced-")]
    assert len(aside) == 1 and (aside[0] / "final").is_dir()
    capsys.readouterr()
    assert main(["pipeline", str(grid / "grid3.yaml"), "--only", "xlsr-A"]) == 0
    assert capsys.readouterr().out.count("done earlier") == 5
