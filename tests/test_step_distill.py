"""Step 2 (SAMU distillation): teacher cache use, R@1 over distinct texts, export, overfit,
exact resume with speed perturbation, the auxiliary CTC option, mini config and CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import samu_st.steps.distill as distill_module
from fixtures_corpora import NO_DROPOUT, TINY_CORPUS, mini_corpus, quiet_train
from samu_st.cli import main
from samu_st.config import load_step_config
from samu_st.data.manifest import read_manifest, resolve_audio, write_manifest
from samu_st.errors import ConfigError
from samu_st.metrics import retrieval_recall_at_1
from samu_st.models.encoder import EncoderConfig, build_wav2vec2
from samu_st.models.samu import SamuModel
from samu_st.models.teacher import TextTeacher
from samu_st.packaged import packaged_dir
from samu_st.steps.data import DataConfig
from samu_st.steps.distill import (
    DistillConfig,
    TeacherConfig,
    TeacherTable,
    center_tables,
    run_distill,
)
from samu_st.steps.tasks_distill import DistillModel, DistillTask, recall_at_1
from samu_st.training.config import OptimConfig
from samu_st.training.tracking import read_jsonl

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
    pytest.mark.usefixtures("one_thread"),
]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mini_corpus(tmp_path_factory, TINY_CORPUS)


def distinct_texts(corpus: Path, splits: Sequence[str]) -> set[str]:
    return {u.target_text for s in splits for p in (corpus / s).glob("*.jsonl")
            for u in read_manifest(p)}  # fmt: skip


def tiny_config(out: Path, corpus: Path | str, steps: int, **train: Any) -> DistillConfig:
    return DistillConfig(
        out_dir=str(out),
        data=DataConfig(manifests=(str(corpus),), max_duration=3.0, speed_factors=(0.9, 1.0, 1.1)),
        dev=DataConfig(manifests=(str(corpus),), split="dev", max_duration=10.0),
        encoder=EncoderConfig(size="tiny", mask_time_prob=0.0, **NO_DROPOUT),  # type: ignore[arg-type]
        teacher=TeacherConfig(pooling="mean", text_field="target_text"),
        head_lr=3e-3,
        train=quiet_train(steps, 3e-3, **{"log_every": 2, **train}),
    )


def test_recall_at_1_over_distinct_texts() -> None:
    cands = torch.eye(3)  # 3 distinct texts
    speech = torch.tensor([[1.0, 0.1, 0], [0.9, 0, 0.2], [0, 0, 1], [0, 1, 0.5]])
    targets = torch.tensor([0, 0, 2, 2])  # two utterances share text 0, two text 2
    assert recall_at_1(speech, cands, targets) == 0.75
    # With all texts distinct it is the paired metric of samu_st.metrics.
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)
    assert recall_at_1(s + t, t, torch.arange(20)) == retrieval_recall_at_1(s + t, t)


def test_centering_removes_the_training_mean_from_every_table() -> None:
    train = TeacherTable(torch.tensor([[1.0, 2.0], [3.0, 2.0]]), torch.tensor([0, 0, 1, 0]), [])
    dev = TeacherTable(torch.tensor([[0.0, 0.0]]), torch.tensor([0]), [])
    centered = center_tables([train, dev])
    mean = torch.tensor([1.5, 2.0])  # utterance-weighted: text 0 is said 3 times, text 1 once
    assert torch.allclose(centered[0].embeddings[centered[0].rows].mean(0), torch.zeros(2))
    assert torch.allclose(centered[1].embeddings, -mean[None])
    assert torch.equal(centered[1].rows, dev.rows)


def test_teacher_runs_once_per_distinct_text_never_in_the_loop(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list[str] = []
    in_loop = False
    real_embed, real_train = TextTeacher.embed, distill_module.train

    def embed(self: TextTeacher, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        assert not in_loop, "the teacher ran inside the training loop"
        embedded.extend(texts)
        return real_embed(self, texts, batch_size)

    def train(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_loop
        in_loop = True
        try:
            return real_train(*args, **kwargs)
        finally:
            in_loop = False

    monkeypatch.setattr(TextTeacher, "embed", embed)
    monkeypatch.setattr(distill_module, "train", train)
    cache = tmp_path / "shared.sqlite"
    cfg = replace(tiny_config(tmp_path / "a", corpus, 2), teacher=TeacherConfig(
        pooling="mean", text_field="target_text", cache=str(cache)))  # fmt: skip
    run_distill(cfg)
    expected = distinct_texts(corpus, ["train", "dev"])
    assert sorted(embedded) == sorted(expected)  # each distinct text once (13 numbers here)
    assert len(expected) < 16 + 8  # the corpus repeats texts, so this tests the de-duplication
    run_distill(replace(cfg, out_dir=str(tmp_path / "b")))  # same shared cache: no teacher call
    assert len(embedded) == len(expected)


def test_end_to_end_with_aux_ctc_exports_what_step_3_loads(corpus: Path, tmp_path: Path) -> None:
    cfg = replace(tiny_config(tmp_path / "run", corpus, 4, val_every=2), aux_ctc_weight=0.5)
    folder = run_distill(cfg)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [v["step"] for v in metrics["validations"]] == [2, 4]
    n_dev = len(distinct_texts(corpus, ["dev"]))
    assert metrics["val_r1_chance"] == pytest.approx(1 / n_dev)
    assert 0.0 <= metrics["val_r1"] <= 1.0 and 0.0 < metrics["val_cosine"] < 2.0
    train = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if r["kind"] == "train"]
    assert train[0]["ctc"] > 0 and set(train[0]["lr"]) == {"encoder", "head", "ctc_head"}
    samu = SamuModel.load(folder)
    assert samu.out_dim == 384 and samu.encoder.mode == "full"  # MiniLM's dimension
    encoder = build_wav2vec2(EncoderConfig(pretrained=str(folder / "encoder"), mode="adapters"))
    assert encoder.config.hidden_size == 32


def test_param_groups_separate_head_and_encoder_lrs() -> None:
    model = DistillModel(SamuModel.from_config(EncoderConfig(size="tiny"), 8), ctc_vocab_size=5)
    groups = DistillTask(head_lr=1e-2).param_groups(model, OptimConfig(lr=1e-4))
    by_name = {g["name"]: g for g in groups}
    assert (by_name["encoder"]["lr"], by_name["head"]["lr"]) == (1e-4, 1e-2)
    conv = {id(p) for p in model.samu.encoder.model.feature_extractor.parameters()}
    assert not conv & {id(p) for g in groups for p in g["params"] if p.requires_grad}
    assert sum(p.numel() for p in by_name["head"]["params"]) == 32 + 32 * 8 + 8


def test_overfits_a_handful_of_clips(corpus: Path, tmp_path: Path) -> None:
    source = corpus / "train" / "fr.jsonl"
    utts = [replace(u, audio=str(resolve_audio(u, source))) for u in read_manifest(source)][:4]
    four = tmp_path / "four.jsonl"
    write_manifest(four, utts)
    cfg = tiny_config(tmp_path / "run", four, 60, log_every=10)
    cfg = replace(cfg, dev=replace(cfg.data, speed_factors=(1.0,)))
    folder = run_distill(cfg)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "train_log.jsonl")
              if r["kind"] == "train"]  # fmt: skip
    # measured: 0.71 -> 0.089 over 60 updates; the 4 clips are then retrieved perfectly
    assert losses[0] > 0.5 and losses[-1] < 0.2 * losses[0], losses
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val_r1"] == 1.0 and metrics["val_r1_chance"] == 0.25


def test_resume_is_exact_with_speed_perturbation(corpus: Path, tmp_path: Path) -> None:
    straight = run_distill(tiny_config(tmp_path / "a", corpus, 6, save_every=3))
    cfg = tiny_config(tmp_path / "b", corpus, 6, save_every=3)
    run_distill(cfg)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000006")
    resumed = run_distill(cfg, resume=True)
    sa = load_file(straight / "head.safetensors") | load_file(
        straight / "encoder" / "model.safetensors"
    )
    sb = load_file(resumed / "head.safetensors") | load_file(
        resumed / "encoder" / "model.safetensors"
    )
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["train_loss"] is not None


def test_mini_config_and_cli(corpus: Path, tmp_path: Path) -> None:
    cfg = load_step_config(DistillConfig, CONFIGS / "mini.yaml", "distill")
    # the paper's setting since issue #15: a multilingual teacher on the transcript, no
    # auxiliary CTC, the conv front end frozen, starting from the shipped mini-XLS-R
    assert cfg.teacher.path == "packaged:multilingual-e5-small"
    assert cfg.teacher.pooling == "native" and cfg.teacher.text_field == "source_text"
    assert cfg.teacher.text_prefix == "query: "
    assert cfg.data.speed_factors == (0.9, 1.0, 1.1) and cfg.aux_ctc_weight == 0.0
    assert cfg.teacher.center and not cfg.encoder.train_feature_encoder
    assert cfg.encoder.pretrained == str(packaged_dir() / "mini-xls-r")
    with pytest.raises(ConfigError, match="head_lr"):
        replace(cfg, head_lr=0.0)
    config = tmp_path / "steps.yaml"
    config.write_text(
        "distill:\n"
        f"  out_dir: {tmp_path / 'cli'}\n"
        f"  data: {{manifests: [{corpus}], max_duration: 3.0}}\n"
        "  encoder: {size: tiny}\n"
        "  teacher: {pooling: mean, text_field: target_text}\n"
        "  train: {max_steps: 2, progress_bar: false, tensorboard: false}\n",
        encoding="utf-8",
    )
    assert main(["distill", str(config)]) == 0
    assert main(["distill", str(config), "--resume"]) == 0  # finished: re-exports, no error
    assert (tmp_path / "cli" / "final" / "encoder" / "model.safetensors").is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("text_field: target_text", "text_field: transcript"))
    assert main(["distill", str(bad)]) == 2
