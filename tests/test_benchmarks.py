"""``python -m benchmarks --quick``: one well-formed JSON object per benchmark, real numbers."""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks import BENCHMARKS
from benchmarks.common import ratio
from benchmarks.loops import StepTimer, TimedTask, timed_window
from benchmarks.padding import hf_batches, matched_batch_size, ours_batches

ROOT = Path(__file__).resolve().parents[1]
MACHINE_KEYS = {"cores", "cpu_model", "torch", "transformers", "device", "torch_threads"}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    work = tmp_path_factory.mktemp("bench")
    out = work / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--work", str(work), "--out", str(out),
         "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines == out.read_text().splitlines()  # stdout holds the JSON lines and nothing else
    return [json.loads(line) for line in lines]


def _finite_positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_one_record_per_benchmark_with_the_schema(records: list[dict[str, Any]]) -> None:
    assert [r["benchmark"] for r in records] == list(BENCHMARKS)
    for r in records:
        assert "error" not in r, r.get("error")
        assert r["quick"] is True
        datetime.datetime.fromisoformat(r["date"])
        assert set(r["machine"]) >= MACHINE_KEYS
        assert r["machine"]["torch_threads"] == 1
        for key in ("loadavg_start", "loadavg_end"):
            assert len(r["machine"][key]) == 3 and all(x >= 0 for x in r["machine"][key])
        assert r["ours"]["method"] and r["reference"]["method"]
        assert r["headline"] in r["ratios"] and r["ratio"] == r["ratios"][r["headline"]]
        assert isinstance(r["notes"], list) and r["wall_seconds"] >= 0


def test_every_ratio_is_finite_and_positive(records: list[dict[str, Any]]) -> None:
    for r in records:
        if r["reference"]["available"]:
            bad = {k: v for k, v in r["ratios"].items() if not _finite_positive(v)}
            assert not bad, (r["benchmark"], bad)
        else:  # never faked: an unavailable reference has no ratio, and says why
            assert all(v is None for v in r["ratios"].values()) and r["reference"]["reason"]


def test_training_sides_time_the_same_updates(records: list[dict[str, Any]]) -> None:
    for name in ("st_train", "ctc_train"):
        r = next(x for x in records if x["benchmark"] == name)
        for side in (r["ours"], r["reference"]):
            assert side["updates_timed"] >= 1 and side["audio_seconds_timed"] > 0
            assert side["peak_rss_mb"] > 100  # torch alone is more than that
        # st_train's cached side first trains one untimed epoch (it fills its cache)
        skipped = r["ours"].get("first_epoch", {}).get("updates", 0)
        assert (name == "st_train") == (skipped > 0)
        first = r["ours"]["first_timed_update"] - skipped
        assert first == r["reference"]["first_timed_update"]
        assert r["ours"]["updates_timed"] == r["reference"]["updates_timed"]
        assert r["ours"]["trainable_parameters"] <= r["reference"]["trainable_parameters"]


def test_beam_search_fp32_is_exact(records: list[dict[str, Any]]) -> None:
    r = next(x for x in records if x["benchmark"] == "beam_search")
    exact = r["ours"]["fp32_exact"]
    assert exact["compared_with"] == "reference_notebook"  # generate() in fp32
    assert exact["same_hypotheses_as_reference"] == 1.0
    assert exact["bleu"] == r["reference_notebook"]["bleu"]
    assert r["setup"]["translating_model"] is r["target"]["translating_model"]
    assert abs(r["target"]["bleu_difference"]) <= 100


def test_same_work_references_and_speechbrain(records: list[dict[str, Any]]) -> None:
    by_name = {r["benchmark"]: r for r in records}
    for name in ("st_train", "ctc_train", "beam_search", "encoder_rtf"):
        r = by_name[name]
        assert r["reference_notebook"]["method"] and r["reference"]["settings"], name
    st = by_name["st_train"]
    assert st["ours"]["trainable_parameters"] == st["reference"]["trainable_parameters"]
    cache = st["ours"]["front_end_cache"]  # epoch 1 computed every clip, the timed ones hit
    assert cache["misses"] > 0 and cache["hits"] > 0
    plain = st["ours_no_front_end_cache"]
    assert "front_end_cache" not in plain and plain["updates_timed"] == st["ours"]["updates_timed"]
    for name in ("st_train", "ctc_train"):  # bf16=True really ran under autocast
        r = by_name[name]
        assert r["reference"]["autocast_bf16_seen"] is True
        assert r["reference_notebook"]["autocast_bf16_seen"] is False
    sb = by_name["speechbrain_samu"]
    if sb["reference"]["available"]:
        assert (
            sb["ours"]["updates"] == sb["reference"]["updates"] == sb["setup"]["updates_per_side"]
        )
        for side in (sb["ours"], sb["reference"]):
            assert 0 <= side["dev_r1"] <= 1 and side["median_update_seconds"] > 0


def test_padding_and_data_loading_figures(records: list[dict[str, Any]]) -> None:
    pad = next(x for x in records if x["benchmark"] == "padding")
    assert 0 <= pad["ours"]["padding"] < pad["reference"]["padding"] < 1
    load = next(x for x in records if x["benchmark"] == "data_loading")
    assert load["ours"]["clips"] == load["setup"]["clips"] > 0
    assert load["ours"]["clips_per_sec"] > 1


def test_ratio_orientation() -> None:
    assert ratio(10.0, 5.0, higher_is_better=True) == 2.0  # throughput
    assert ratio(1.0, 3.0, higher_is_better=False) == 3.0  # time, memory, padding
    assert ratio(0.0, 3.0, higher_is_better=False) is None
    assert ratio(None, 3.0, higher_is_better=True) is None


def test_both_timers_number_updates_alike() -> None:
    """Marks before updates 1..N (ours) and after updates 1..N (Trainer) give the same
    update numbers, so a window compares the same updates."""

    class Inner:
        def batch_seconds(self, batch: Any) -> float:
            return float(batch)

    task = TimedTask(Inner())  # type: ignore[arg-type]
    timer = StepTimer()
    for k in range(5):
        task.on_step(k)
        task.batch_seconds(k + 1)
        timer.ends.append(float(k + 1))
    task.marks = [float(k) for k in range(5)]
    ours, theirs = task.per_update(), timer.per_update([1.0, 2.0, 3.0, 4.0, 5.0])
    assert set(ours) == {1, 2, 3, 4} and set(theirs) == {2, 3, 4, 5}
    assert ours[3] == theirs[3] == (1.0, 3.0)
    window = timed_window(ours, 2, 4)
    assert window["updates_timed"] == 3 and window["audio_seconds_timed"] == 9.0
    assert window["audio_sec_per_sec"] == 3.0  # 9 s of audio in 3 one-second updates


def test_matched_batch_size_and_samplers() -> None:
    durations = [0.5 + 0.01 * (i % 100) for i in range(400)]
    size = matched_batch_size(durations, 20.0)
    ours = ours_batches(durations, 20.0, 0)
    assert abs(size * len(ours) - len(durations)) <= size  # same audio per batch on average
    grouped = hf_batches(durations, size, 0, grouped=True)
    assert sorted(i for b in grouped for i in b) == list(range(len(durations)))
    assert all(max(durations[i] for i in b) * len(b) <= 20.0 for b in ours)


def test_results_table_has_one_row_per_benchmark(
    records: list[dict[str, Any]], tmp_path: Path
) -> None:
    from benchmarks.table import table

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    lines = table(path).splitlines()
    assert len(lines) == 2 + len(BENCHMARKS)
    for name, line in zip(BENCHMARKS, lines[2:], strict=True):
        assert line.startswith(f"| {name} (") and line.count("|") == 8
    for r in records:  # the ratios column (scaling has no reference side, hence no ratio)
        line = next(x for x in lines[2:] if x.startswith(f"| {r['benchmark']} ("))
        if r["reference"]["available"]:  # three decimals: 1.496 must not read as 1.50
            assert re.search(r"\| [a-z_]+ \d+\.\d{3}x", line), line
        target = r.get("target")
        if isinstance(target, dict) and "met" in target:
            assert line.count("; target met" if target["met"] else "; target NOT met") == 1, line


def test_paper_step_runs_its_measurement_on_a_tiny_translator(tmp_path: Path) -> None:
    """``--only paper_step`` builds the paper-size model (minutes); the same code path on the
    tiny presets of configs/paper.yaml's `model:` setup, in this process."""
    from benchmarks import paper_step
    from benchmarks.corpus import Context

    from samu_st.config import load_step_config
    from samu_st.models.translator import TranslatorConfig

    paper = load_step_config(TranslatorConfig, paper_step.PAPER_CONFIG, "model")
    cfg = paper_step.paper_model_config(tiny=True)
    assert (cfg.encoder.mode, cfg.decoder.trainable) == (paper.encoder.mode, "lna")
    assert cfg.encoder.gradient_checkpointing and cfg.encoder.size == "tiny"
    assert cfg.encoder.pretrained is None and cfg.decoder.pretrained is None
    rec = paper_step.run(Context(work=tmp_path, quick=True, isolate=False)).to_json()
    json.loads(json.dumps(rec))  # one JSON line
    ours, spec = rec["ours"], paper_step.QUICK_SPEC
    for key in ("seconds_per_update", "audio_sec_per_sec", "peak_rss_mb",
                "estimated_10min_batch_mb", "checkpoint_save_seconds",
                "checkpoint_load_seconds", "checkpoint_mb", "beam5_decode_seconds"):  # fmt: skip
        assert _finite_positive(ours[key]), key
    detail = ours["detail"]
    updates = detail["updates"]
    assert len(updates["update_seconds"]) == spec.warmup + spec.updates
    assert updates["trainable_tensors_without_gradient"] == 0  # checkpointing cuts no adapter off
    assert updates["target_tokens"] == spec.clips * (spec.target_words + 1)  # words + </s>
    groups = detail["parameter_groups"]
    assert detail["trainable_parameters"] == sum(g["trainable"] for g in groups.values())
    assert groups["encoder"]["trainable"] == 0 < groups["bottleneck_adapters"]["trainable"]
    util = detail["utilisation"]
    assert util["update_gflop"] > util["forward_gflop"] > 0 and util["mfu_of_gemm_peak"] > 0
    assert "600 s" in detail["memory_estimate"]["formula"]
    assert detail["checkpoint"]["tensors"] > 0
    assert rec["ratios"]["decode_speed"] == rec["ratio"] > 0
    assert ours["gpu_10min"] is None or ours["gpu_10min"]["seconds_per_update"] > 0


def test_paper_step_gpu_only_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--gpu-only`` on a GPU machine: no CPU side; the record is assembled from the GPU
    side (here the GPU side's measurement runs on the CPU: the assembly is what is tested)."""
    from benchmarks import paper_step
    from benchmarks.corpus import Context
    from benchmarks.side import run_side

    devices: list[str] = []

    def side(target: str, kwargs: dict[str, Any], isolate: bool) -> dict[str, Any]:
        devices.append(kwargs["device"])
        return run_side(target, {**kwargs, "device": "cpu"}, isolate)

    monkeypatch.setattr(paper_step, "has_gpu", lambda: True)
    monkeypatch.setattr(paper_step, "run_side", side)
    ctx = Context(work=tmp_path, quick=True, isolate=False, gpu_only=True)
    rec = paper_step.run(ctx).to_json()
    assert devices == ["cuda"]  # the CPU side did not run
    json.loads(json.dumps(rec))
    gpu = rec["ours"]["gpu_10min"]
    assert gpu["seconds_per_update"] > 0 and gpu["batch_seconds"] > 0
    assert rec["ours"]["beam5_decode_seconds"] == gpu["detail"]["decode"]["samu"]["seconds"]
    assert rec["setup"]["cpu_batch"] is None and "clips" in rec["setup"]["gpu_batch"]
    assert rec["ratios"]["decode_speed"] > 0
    assert any("--gpu-only" in note for note in rec["notes"])


@pytest.fixture(scope="module")
def scaling_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """``--quick --only scaling`` alone (seconds): its record and the --out folder."""
    work = tmp_path_factory.mktemp("scaling")
    out = work / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "scaling", "--work", str(work),
         "--out", str(out), "--threads", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.splitlines()
    assert out.read_text().splitlines() == [line]
    return json.loads(line), work


SCALING_FIGURES = (
    "seconds_per_update",
    "audio_sec_per_sec",
    "process_peak_rss_mb",
    "peak_memory_during_updates_mb",
    "parameters",
    "trainable_parameters",
)


def test_scaling_record_has_both_curves_and_a_plot(
    scaling_record: tuple[dict[str, Any], Path],
) -> None:
    from benchmarks import scaling

    r, work = scaling_record
    assert r["benchmark"] == "scaling" and r["quick"] is True and "error" not in r
    datetime.datetime.fromisoformat(r["date"])
    assert set(r["machine"]) >= MACHINE_KEYS and r["machine"]["torch_threads"] == 1
    assert len(r["machine"]["loadavg_start"]) == len(r["machine"]["loadavg_end"]) == 3
    assert r["reference"]["available"] is False and r["reference"]["reason"]
    assert r["ratio"] is None and all(v is None for v in r["ratios"].values())
    plan, ours = scaling.QUICK_PLAN, r["ours"]
    batch, sizes = ours["batch_curve"], ours["size_curve"]
    assert [p["batch_seconds"] for p in batch] == list(plan.batch_seconds)
    assert {p["size"] for p in batch} == {plan.batch_size_preset}
    assert [p["size"] for p in sizes] == list(plan.sizes)
    assert {p["batch_seconds"] for p in sizes} == {plan.size_batch_seconds}
    for p in batch + sizes:
        for key in SCALING_FIGURES:
            assert _finite_positive(p[key]), (p["size"], p["batch_seconds"], key)
        assert p["trainable_parameters"] < p["parameters"]  # adapters + LNA-D only
        assert len(p["update_seconds"]) == p["warmup_updates"] + plan.updates
        assert p["clips"] * p["clip_seconds"] == p["batch_seconds"]
    assert all(p["gradient_checkpointing"] for p in sizes)  # paper.yaml's set-up
    assert not any(p["gradient_checkpointing"] for p in batch)  # st_train's
    assert sizes[0]["parameters"] < sizes[-1]["parameters"]
    assert ours["seconds_per_update_by_size"] == {p["size"]: p["seconds_per_update"] for p in sizes}
    plot = Path(ours["plot"])
    assert plot == work / "scaling-results.png"  # beside --out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaling_middle_preset_is_registered_only_while_building() -> None:
    from benchmarks.scaling import middle_presets, model_config

    from samu_st.models.encoder_presets import WAV2VEC2_PRESETS
    from samu_st.models.summary import summarize, translator_on_meta

    with middle_presets():
        assert "base" in WAV2VEC2_PRESETS
        model, _ = translator_on_meta(model_config("base", "paper"), from_architecture=True)
        counts = summarize(model)
    assert "base" not in WAV2VEC2_PRESETS
    assert 100e6 < counts.total < 300e6 and 0 < counts.trainable < counts.total
