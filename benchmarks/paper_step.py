"""Benchmark ``paper_step``: one step-3 update of the PAPER-SIZE translator on this machine.

The model is the one ``configs/paper.yaml``'s ``model:`` section describes (XLS-R 300M encoder
in ``adapters`` mode with gradient checkpointing, no length adaptor, the MBART-50 decoder with
LNA-D, vocabulary 250,054 + the new language tokens), built through the library
(:func:`~samu_st.models.translator.build_translator`) from the architecture presets with random
weights: the pretrained folders it names are never read (nothing can be downloaded here, and
the timings do not depend on the weights). It measures, in a fresh process:

- seconds per update of step 3 at a 60 s batch (6 clips of 10 s random audio, ~25 target
  tokens each): :class:`~samu_st.steps.tasks_st.STTask`'s loss under bf16 autocast, backward,
  the gradient norm, Adam and the tri-stage scheduler, as ``samu_st.training.loop`` does them;
- peak RSS (``ru_maxrss``) and the RSS growth during the updates, from which the memory of a
  10-minute batch is ESTIMATED (formula in the record);
- writing and reading the trainable state through
  :class:`~samu_st.training.checkpoint.CheckpointManager` (size on disk too);
- beam-5 decoding of one 10 s clip by our engine (:mod:`samu_st.decoding.beam` through
  :func:`~samu_st.decoding.translate.generate_batch`); the reference is transformers'
  ``generate(num_beams=5)`` on the same clip, in the same precision.

With a GPU, the same runs at a 10-minute batch (60 clips of 10 s) in bf16 with SDPA attention
and gradient checkpointing, and reports seconds per update, audio hours per GPU-hour, MFU and
``torch.cuda.max_memory_allocated``. MFU counts MODEL FLOPs: ``FlopCounterMode`` over one
forward + backward of one clip without activation recomputation, times the clips.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Record, ratio
from benchmarks.corpus import Context
from benchmarks.paper_measure import StepSpec
from benchmarks.side import run_side
from samu_st.config import from_dict, load_step_config, load_yaml, to_dict
from samu_st.models.translator import TranslatorConfig
from samu_st.training.config import TrainConfig

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
# 60 s of speech; 1 warm-up + 2 timed updates: the fewest that give a timed mean (about 9
# minutes in all on the shared 2-core CPU, most of it the three updates).
CPU_SPEC = StepSpec(6, 10.0, 24, 1, 2, decode_seconds=10.0, decode_rounds=2, num_beams=5,
                    max_new_tokens=25, gemm_n=2048)  # fmt: skip
# The paper's batch: 10 minutes of speech per update (§2).
GPU_SPEC = replace(CPU_SPEC, clips=60, updates=3, decode_rounds=3, gemm_n=8192)
# --quick (tests): the same code on the tiny presets.
QUICK_SPEC = StepSpec(2, 1.0, 6, 1, 1, 1.0, 1, 5, 6, 256)


def paper_model_config(path: Path = PAPER_CONFIG, tiny: bool = False) -> TranslatorConfig:
    """``path``'s ``model:`` section with the pretrained folders dropped (the architecture
    presets it names are built instead); ``tiny``: the same setup at the tiny presets."""
    cfg = load_step_config(TranslatorConfig, path, "model")
    encoder = replace(cfg.encoder, pretrained=None, size="tiny" if tiny else cfg.encoder.size)
    decoder = replace(cfg.decoder, pretrained=None, preset="tiny" if tiny else cfg.decoder.preset)
    return replace(cfg, encoder=encoder, decoder=decoder, tokenizer=None)


def paper_train_config(path: Path = PAPER_CONFIG) -> TrainConfig:
    """``train_st.train`` of ``path`` (optimiser, schedule, precision)."""
    section = load_yaml(path).get("train_st", {}).get("train", {})
    return from_dict(TrainConfig, section, where=f"{path}:train_st.train")


def _cpu_side(result: dict[str, Any]) -> dict[str, Any]:
    """The CPU figures the record shows (the full measurement stays under ``detail``)."""
    up, ck = result["updates"], result["checkpoint"]
    return {
        "method": "step-3 update: STTask loss under bf16 autocast, backward, grad norm, Adam "
        "+ tri-stage LR (the training loop's order); adapters + LNA-D train",
        "seconds_per_update": up["seconds_per_update"],
        "audio_sec_per_sec": up["audio_sec_per_sec"],
        "peak_rss_mb": result["process_peak_rss_mb"],
        "estimated_10min_batch_mb": result["memory_estimate"]["estimated_mb"],
        "checkpoint_save_seconds": ck["save_seconds"],
        "checkpoint_load_seconds": ck["load_seconds"],
        "checkpoint_mb": ck["size_mb"],
        "beam5_decode_seconds": result["decode"]["samu"]["seconds"],
        "detail": result,
    }


def _gpu_side(result: dict[str, Any]) -> dict[str, Any]:
    """The GPU figures at a 10-minute batch."""
    up, util = result["updates"], result["utilisation"]
    return {
        "device_name": util["device_name"],
        "batch_seconds": result["batch_seconds"],
        "seconds_per_update": up["seconds_per_update"],
        # audio seconds per GPU second = audio hours per GPU-hour
        "audio_hours_per_gpu_hour": up["audio_sec_per_sec"],
        "mfu": util["mfu"],
        "mfu_of_measured_gemm_peak": util["mfu_of_gemm_peak"],
        "cuda_max_memory_allocated_mb": up["peak_memory_during_updates_mb"],
        "detail": result,
    }


FLOP_FORMULA = (
    "model FLOPs per update = FlopCounterMode over one real forward + backward of ONE clip of "
    "the batch with activation checkpointing off (no recomputation), times the clips: "
    "matmul/conv/attention FLOPs of the forward (≈ 2·N·tokens for every parameter on the path), "
    "the activation gradients (≈ the forward again, for the layers above the first trainable "
    "module) and the weight gradients of trainable parameters only (frozen weights get none); "
    "norms, activations and the optimizer are not counted. MFU = model FLOPs / seconds per "
    "update / the GPU's dense bf16 data-sheet peak; mfu_of_measured_gemm_peak divides by a "
    "measured bf16 matmul peak (n×n GEMM) instead."
)


def _gpu_only_side(gpu: dict[str, Any]) -> dict[str, Any]:
    """``ours`` of a ``--gpu-only`` run: the 10-minute-batch figures and the GPU decode."""
    return {
        "method": "step-3 update at a 10-minute batch on the GPU (bf16 autocast, SDPA, "
        "gradient checkpointing); the CPU side was not run (--gpu-only)",
        "beam5_decode_seconds": gpu["detail"]["decode"]["samu"]["seconds"],
        "gpu_10min": gpu,
    }


def has_gpu() -> bool:
    return torch.cuda.is_available()


def _batch_text(spec: StepSpec) -> str:
    return (
        f"{spec.clips} clips × {spec.clip_seconds:g} s random audio, {spec.target_words} words "
        "(+ </s>) per target"
    )


def run(ctx: Context) -> Record:
    rec = Record("paper_step", ctx.quick)
    cfg, train_cfg = paper_model_config(tiny=ctx.quick), paper_train_config()
    spec = QUICK_SPEC if ctx.quick else CPU_SPEC
    work = ctx.work / "paper_step"
    kwargs = {"model": to_dict(cfg), "train": to_dict(train_cfg), "work": str(work)}
    on_gpu = has_gpu()
    cpu = None
    if not (ctx.gpu_only and on_gpu):
        cpu = run_side("paper_measure:measure", {**kwargs, "spec": asdict(spec), "device": "cpu"},
                       ctx.isolate)  # fmt: skip
    gpu = None
    if on_gpu:
        gpu_spec = QUICK_SPEC if ctx.quick else GPU_SPEC
        args = {**kwargs, "spec": asdict(gpu_spec), "device": "cuda"}
        gpu = _gpu_side(run_side("paper_measure:measure", args, ctx.isolate))
    main = cpu if cpu is not None else gpu["detail"] if gpu is not None else None
    assert main is not None  # the CPU side runs unless a GPU side does
    decode = main["decode"]
    cpu_batch = gpu_batch = None
    if cpu is not None:
        cpu_batch = _batch_text(spec)
    if gpu is not None:
        gpu_batch = _batch_text(StepSpec(**gpu["detail"]["spec"]))
    rec.setup = {
        "config": f"{PAPER_CONFIG.name} model: section, pretrained folders not read, "
        + ("TINY presets (quick)" if ctx.quick else "paper presets (XLS-R 300M + MBART-50)"),
        "model": to_dict(cfg),
        "parameters": main["parameters"],
        "trainable_parameters": main["trainable_parameters"],
        "cpu_batch": cpu_batch,
        "gpu_batch": gpu_batch,
        "decode_device": main["device"],
        "optimizer": to_dict(train_cfg.optim),
    }
    if cpu is not None:
        rec.ours = {**_cpu_side(cpu), "gpu_10min": gpu}
    else:
        assert gpu is not None
        rec.ours = _gpu_only_side(gpu)
    rec.reference = {
        "method": f"decode only: transformers generate(num_beams=5) on the same clip, bf16 "
        f"autocast, on the {main['device']} (the update, checkpoint and memory figures have no "
        "reference side)",
        "available": True,
        "beam5_decode_seconds": decode["generate"]["seconds"],
        "beam5_decode_rounds": decode["generate"]["rounds"],
    }
    rec.ratios = {
        "decode_speed": ratio(decode["samu"]["seconds"], decode["generate"]["seconds"], False)
    }
    rec.headline = "decode_speed"
    rec.notes = [
        "random weights: timings do not depend on them; the decode runs to max_new_tokens",
        "bf16 autocast on the CPU as train-st runs with train.cpu_bf16: true (paper.yaml's "
        "mixed_precision: bf16 applies to GPUs; without cpu_bf16 a CPU trains in fp32)",
        "memory_estimate: " + main["memory_estimate"]["formula"],
        FLOP_FORMULA,
        "machine shared with other jobs: timings are upper bounds",
    ]
    if gpu is None:
        rec.notes.append("no GPU here: gpu_10min (10-minute batches, bf16, SDPA) not measured")
    if cpu is None:
        rec.notes.append("--gpu-only: the paper-size CPU update was not measured in this run")
    return rec
