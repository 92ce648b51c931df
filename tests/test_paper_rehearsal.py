"""The paper rehearsal (DESIGN.md §7): `samu-st pipeline` on a copy of configs/paper.yaml that
differs only in paths (and step counts, given on the command line), on tiny stand-ins in the
released formats — XLS-R as its legacy `pytorch_model.bin` with `weight_g`/`weight_v` and
`layerdrop: 0.1`, LaBSE in the sentence-transformers layout, MBART-50 many-to-one with its 52
language codes, CoVoST-2 released TSVs joined with Common Voice folders holding only
`validated.tsv` — under two processes (torchrun, gloo). It asserts what each stage RESOLVED:
the data it read, the teacher's vector, the trainable parameters and the decoder prefix."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from samu_st.cli import main
from samu_st.grid import HIGH_RESOURCE
from standins.corpora import COVOST_READ_COLUMNS, write_paper_corpora
from standins.labse import write_labse
from standins.mbart50 import write_mbart50
from standins.xlsr import write_xlsr
from test_ddp import torchrun

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
LANGS = ("fr", "de", "ca", "cy", "ja")  # ca and cy: no MBART-50 code
STEPS = [f"{s}.train.max_steps=2" for s in ("distill", "train_ctc", "train_st")]


def paper_copy(root: Path, paths: dict[str, Path]) -> Path:
    """configs/paper.yaml with its placeholder paths replaced, nothing else."""
    text = PAPER.read_text(encoding="utf-8")
    for placeholder, real in paths.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, str(real))
    path = root / "paper.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def prepare_data(root: Path) -> tuple[Path, Path]:
    """CoVoST-2 released TSVs + Common Voice 8 folders holding only validated.tsv and clips/,
    imported as a user does: `prepare covost2` for step 3, `prepare commonvoice
    --train-from-validated` per language (into one folder) for step 2."""
    release = write_paper_corpora(root / "release", LANGS, covost_columns=COVOST_READ_COLUMNS)
    covost, cv = root / "covost2", root / "cv8"
    assert main(["prepare", "covost2", str(release.covost_tsv_dir), str(release.cv_root),
                 "--out", str(covost)]) == 0  # fmt: skip
    for lang in LANGS:
        assert main(["prepare", "commonvoice", str(release.cv_lang_dir(lang)),
                     "--train-from-validated", "--out", str(cv)]) == 0  # fmt: skip
    return covost, cv


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper")
    covost, cv = prepare_data(root)
    paths = {
        "/data/models/wav2vec2-xls-r-300m": write_xlsr(root / "xlsr", legacy=True),
        "/data/models/LaBSE": write_labse(root / "labse"),
        "/data/models/mbart-large-50-many-to-one-mmt": write_mbart50(root / "mbart", legacy=True),
        "/data/covost2": covost,
        "/data/cv8": cv,
        "runs/paper": root / "out",
        "configs/paper.yaml": root / "paper.yaml",
    }
    config = paper_copy(root, paths)
    assert main(["pipeline", str(config), "--dry-run"]) == 0  # every path exists, formats right
    cmd = [*torchrun(),
           "-m", "samu_st", "pipeline", str(config), *STEPS]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for run in ("first", "second"):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        (root / f"{run}.log").write_text(proc.stdout, encoding="utf-8")
    return {"root": root, "out": root / "out", "covost": covost, "cv": cv}


def resolved(out: Path, stage: str) -> dict:
    return yaml.safe_load((out / stage / "config.yaml").read_text(encoding="utf-8"))


def test_every_stage_finished_on_two_processes_and_is_reused(rehearsal: dict[str, Path]) -> None:
    first = (rehearsal["root"] / "first.log").read_text()
    second = (rehearsal["root"] / "second.log").read_text()
    total = first.count(": finished in ")
    assert total >= 19 and second.count("done earlier") == total, second[-3000:]
    for stage in ("distill", "ctc", "st/samu-xlsr-A", "st/xlsr-F"):
        last = sorted((rehearsal["out"] / stage / "checkpoints").iterdir())[-1]
        assert {"rank-0.pt", "rank-1.pt"} <= {p.name for p in last.iterdir()}, stage
    report = json.loads((rehearsal["out"] / "report" / "report.json").read_text())
    assert len(report["models"]) == 8


def test_step2_and_ctc_read_common_voice_step3_reads_covost(rehearsal: dict[str, Path]) -> None:
    out, cv, covost = rehearsal["out"], str(rehearsal["cv"]), str(rehearsal["covost"])
    distill, ctc = resolved(out, "distill"), resolved(out, "ctc")
    assert distill["data"]["manifests"] == [cv] and distill["dev"]["manifests"] == [covost]
    assert ctc["data"]["manifests"] == [cv]
    for system in ("xlsr-A", "samu-xlsr-A", "samu-xlsr-F", "ctc-xlsr-F", "zs-samu-xlsr-A"):
        st = resolved(out, f"st/{system}")
        assert st["data"]["manifests"] == [covost], system
        assert st["data"]["update_duration"] == 600.0 and st["train"]["max_steps"] == 2
    assert resolved(out, "st/zs-samu-xlsr-A")["data"]["languages"] == list(HIGH_RESOURCE)
    # XLS-R's layerdrop 0.1 kept in step 2 (DDP survived it), 0 in step 3 (frozen + adapters)
    assert distill["encoder"]["layerdrop"] == 0.1
    assert resolved(out, "st/samu-xlsr-A")["model"]["encoder"]["layerdrop"] == 0.0
    # the CV import labelled every clip by its locale column
    assert sorted(p.stem for p in (rehearsal["cv"] / "train").glob("*.jsonl")) == sorted(LANGS)


def test_teacher_vector_is_labse_sentence_embedding(rehearsal: dict[str, Path]) -> None:
    metrics = json.loads((rehearsal["out"] / "distill" / "final" / "metrics.json").read_text())
    teacher = metrics["teacher"]
    assert teacher["pooling"] == "cls"
    assert teacher["dense"]["activation"].endswith("Tanh") and teacher["normalize"] is True


ADAPTER_SET = re.compile(
    r"bottleneck_adapter|encoder_attn\.|encoder_attn_layer_norm|self_attn_layer_norm|"
    r"final_layer_norm|decoder\.layer_norm|layernorm_embedding|added_rows"
)


def trainable(out: Path, system: str) -> list[str]:
    last = sorted((out / "st" / system / "checkpoints").iterdir())[-1]
    return list(load_file(last / "weights.safetensors"))


def test_trainable_sets_are_adapters_plus_lna_d(rehearsal: dict[str, Path]) -> None:
    names = trainable(rehearsal["out"], "samu-xlsr-A")
    assert names and all(ADAPTER_SET.search(n) for n in names), [
        n for n in names if not ADAPTER_SET.search(n)
    ]
    decoder = [n for n in names if ".decoder." in n]
    assert not [n for n in decoder if re.search(r"self_attn\.|fc1|fc2", n)]  # frozen: LNA-D
    assert any("added_rows" in n for n in decoder)  # ca/cy language rows train
    assert sum("bottleneck_adapter" in n for n in names) == 2 * 2 * 4  # 2 per layer, 2 layers
    full = trainable(rehearsal["out"], "xlsr-F")
    assert any(".encoder.layers.0.attention.k_proj" in n for n in full)
    assert not [n for n in full if "feature_extractor" in n or "decoder.layers.0.fc1" in n]


def test_decoder_prefix_is_the_configured_one_everywhere(rehearsal: dict[str, Path]) -> None:
    mode = yaml.safe_load(PAPER.read_text())["model"]["decoder"]["prefix"]
    for system in ("samu-xlsr-A", "xlsr-F"):
        final = rehearsal["out"] / "st" / system / "final"
        saved = json.loads((final / "decoder_prefix.json").read_text())
        assert saved["mode"] == mode
        tokens = saved["prefix_tokens"]
        assert tokens["fr"][0] == "</s>" and ("en_XX" in tokens["fr"]) == (mode != "source")
        assert ("fr_XX" in tokens["fr"]) == (mode != "target")
        assert saved["prefix_ids"]["ca"] != saved["prefix_ids"]["cy"] or mode == "target"
