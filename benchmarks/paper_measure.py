"""The measurements of benchmark ``paper_step`` (:mod:`benchmarks.paper_step`), JSON in and
JSON out so that :func:`benchmarks.side.run_side` can run :func:`measure` in a fresh process.

:func:`measure` builds a translator through the library
(:func:`~samu_st.models.translator.build_translator`, random weights) and measures on one
device: seconds per step-3 update (:class:`Updater`: the training loop's order of loss under
bf16 autocast with the frozen weights stored in bf16, backward, gradient norm, optimizer and
scheduler step), memory before and during the updates, the model FLOPs of an update
(:func:`count_update_flops`), a checkpoint save and load through
:class:`~samu_st.training.checkpoint.CheckpointManager`, and beam-search decoding of one clip
by our engine and by ``generate()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import MB, PeakMemory, cpu_model, process_peak_rss_mb, rss_bytes
from benchmarks.common import device as bench_device
from benchmarks.encoder_rtf import gemm_peak
from samu_st.audio import SAMPLE_RATE
from samu_st.config import from_dict
from samu_st.decoding.translate import Engine, generate_batch
from samu_st.models.conv_layout import channels_last_convs, grouped_conv1d_modules
from samu_st.models.precision import bf16_weights
from samu_st.models.summary import default_vocab_size, summarize
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer
from samu_st.models.translator import TranslatorConfig, build_translator
from samu_st.steps.tasks_st import STBatch, STCollator, STModel, STTask
from samu_st.training.checkpoint import (
    CheckpointManager,
    capture_rng,
    load_trainable_state,
    trainable_state,
)
from samu_st.training.config import TrainConfig
from samu_st.training.cpu_run import cpu_attention_name, cpu_run_settings
from samu_st.training.schedule import build_optimizer, build_scheduler, check_param_groups

Seconds = float
ESTIMATE_SECONDS: Seconds = 600.0  # the paper's batch: 10 minutes of speech (§2)
# Source languages of the batch rows: high- and low-resource ones, and the two MBART-50 lacks.
LANGUAGES = ("fr", "de", "es", "ca", "ja", "cy")
# Target words: a closed set, so that the small BPE tokenizer keeps each one as one token and
# a target of n words is n tokens + </s>.
WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "sixty", "hundred", "thousand",
    "million", "and", "the", "of", "a", "is",
)  # fmt: skip
# Dense bf16 tensor-core peaks (vendor data sheets, no sparsity), for the MFU's denominator;
# the first name contained in the device name wins (so "H100 PCIe" before "H100").
NOMINAL_BF16_PEAK = {
    "H200": 989.4e12,
    "H100 PCIe": 756e12,
    "H100": 989.4e12,
    "A100": 312e12,
    "L40S": 362e12,
}
LABEL_SMOOTHING = 0.1  # train_st's default (configs/paper.yaml keeps it)


@dataclass(frozen=True)
class StepSpec:
    """The batch, the update counts and the decoding of one measurement."""

    clips: int  # clips per update (all of one length: no padding)
    clip_seconds: Seconds  # length of each clip
    target_words: int  # target words per clip (each one token, + </s>)
    warmup: int  # untimed updates first (optimizer state allocated, caches warm)
    updates: int  # timed updates
    decode_seconds: Seconds  # the clip translated by beam search
    decode_rounds: int  # timed decodes per engine, alternating (the fastest counts)
    num_beams: int  # beam size of the decode
    max_new_tokens: int  # generation cap (random weights rarely emit </s>: all steps run)
    gemm_n: int  # matrix size of the bf16 GEMM peak measurement

    @property
    def batch_seconds(self) -> Seconds:
        return self.clips * self.clip_seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_tokenizer(spec: StepSpec) -> tuple[TargetTokenizer, list[str]]:
    """A small target BPE tokenizer and one target text per clip of ``spec.target_words``."""
    texts = [
        " ".join(WORDS[(7 * i + 3 * j) % len(WORDS)] for j in range(spec.target_words))
        for i in range(max(spec.clips, 32))
    ]
    return train_target_tokenizer(texts, vocab_size=300), texts[: spec.clips]


def make_batch(
    tokenizer: TargetTokenizer, texts: Sequence[str], spec: StepSpec, positions: int
) -> STBatch:
    """Random audio (B, S) of ``spec.clips`` × ``spec.clip_seconds`` with ``texts`` as targets,
    collated by train-st's :class:`STCollator`."""
    rng = np.random.default_rng(0)
    samples = int(spec.clip_seconds * SAMPLE_RATE)
    items = [
        {
            "index": i,
            "id": f"clip-{i}",
            "wav": (0.1 * rng.standard_normal(samples)).astype(np.float32),
            "language": LANGUAGES[i % len(LANGUAGES)],
            "source_text": text,
            "target_text": text,
        }
        for i, text in enumerate(texts)
    ]
    return STCollator(tokenizer, positions)(items)


@dataclass
class Updater:
    """The pieces of one step-3 update, as ``samu_st.training.loop`` combines them."""

    model: STModel
    task: STTask
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    clip_norm: float
    device: torch.device
    train: TrainConfig  # the loop's settings the updates mirror (cpu_attention, cpu_dropout)

    @classmethod
    def build(cls, model: STModel, task: STTask, cfg: TrainConfig) -> Updater:
        groups = check_param_groups(model, task.param_groups(model, cfg.optim))
        optimizer = build_optimizer(groups, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.schedule, cfg.max_steps)
        device = next(model.parameters()).device
        return cls(model, task, optimizer, scheduler, cfg.optim.clip_norm, device, cfg)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def update(self, batch: STBatch) -> tuple[float, int]:
        """One update; returns its wall seconds and how many trainable tensors got no
        gradient (a frozen region cut off from the loss, e.g. by checkpointing)."""
        _sync(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.task.loss(self.model, batch)
        out.loss.backward()
        missing = sum(1 for p in self.trainable() if p.grad is None)
        # The loop always computes the norm (it is logged); inf = no clipping.
        torch.nn.utils.clip_grad_norm_(self.trainable(), self.clip_norm or math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start, missing


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that the RSS before
    the updates is live memory only and the growth during them is what they allocate."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS keeps freed pages
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _state_bytes(trainer: Updater) -> int:
    """Gradients + Adam's two moments of the trainable fp32 parameters: what the first update
    allocates besides activations."""
    return sum(p.numel() * p.element_size() * 3 for p in trainer.trainable())


def _memory_now(device: torch.device) -> int:
    return int(torch.cuda.memory_allocated()) if device.type == "cuda" else rss_bytes()


def time_updates(trainer: Updater, batch: STBatch, spec: StepSpec) -> dict[str, Any]:
    """Warm-up and timed updates; peak memory over all of them. The frozen Linear/Conv weights
    are stored in bf16 meanwhile and, on a CPU, the grouped positional conv runs as a
    channels-last conv2d, and attention and dropout are the loop's CPU ones
    (:func:`~samu_st.training.cpu_run.cpu_run_settings` of the updater's train config: eager
    attention with the fast CPU dropout by default)."""
    before = _memory_now(trainer.device)
    state = _state_bytes(trainer)
    times, missing = [], []
    # as the training loop runs by default: train.bf16_frozen_weights, and on a CPU
    # train.cpu_grouped_conv (the positional conv as a channels-last conv2d) and
    # train.cpu_attention + train.cpu_dropout (eager attention, the fast CPU dropout)
    on_cpu = trainer.device.type == "cpu"
    convs = grouped_conv1d_modules(trainer.model) if on_cpu else []
    with (
        PeakMemory(interval=0.01) as peak,
        bf16_weights(trainer.model, frozen_only=True),
        channels_last_convs(convs),
        cpu_run_settings(trainer.model, trainer.train, trainer.device),
    ):
        for _ in range(spec.warmup + spec.updates):
            seconds, lost = trainer.update(batch)
            times.append(seconds)
            missing.append(lost)
    timed = times[spec.warmup :]
    per_update = sum(timed) / len(timed)
    on_gpu = trainer.device.type == "cuda"
    top = peak.cuda_peak if on_gpu and peak.cuda_peak is not None else peak.peak
    activations = max(0, top - before - state)
    return {
        "update_seconds": [round(t, 3) for t in times],
        "warmup_updates": spec.warmup,
        "seconds_per_update": round(per_update, 3),
        "audio_sec_per_sec": round(spec.batch_seconds / per_update, 3),
        "trainable_tensors_without_gradient": max(missing),
        "target_tokens": int((batch.labels != -100).sum()),
        "memory_before_updates_mb": round(before / MB, 1),
        "grad_and_adam_state_mb": round(state / MB, 1),
        "peak_memory_during_updates_mb": round(top / MB, 1),
        "activation_mb": round(activations / MB, 1),
        "activation_bytes_per_audio_second": int(activations / spec.batch_seconds),
    }


def estimate_memory(updates: dict[str, Any], seconds: Seconds = ESTIMATE_SECONDS) -> dict[str, Any]:
    """Memory of a ``seconds`` batch, scaled linearly from the measured one."""
    per_second = updates["activation_bytes_per_audio_second"]
    fixed = updates["memory_before_updates_mb"] + updates["grad_and_adam_state_mb"]
    return {
        "batch_seconds": seconds,
        "estimated_mb": round(fixed + per_second * seconds / MB, 1),
        "formula": (
            "memory_before_updates + grad_and_adam_state + activation_bytes_per_audio_second "
            f"× {seconds:g} s; activation_bytes_per_audio_second = (peak_memory_during_updates "
            "- memory_before_updates - grad_and_adam_state) / batch seconds. Linear in the "
            "number of clips of the measured length (longer clips: attention grows with "
            "length², SDPA keeps it out of memory); on a CPU the peak is sampled RSS, which "
            "includes the allocator's cached pages and the autocast weight copies."
        ),
    }


def time_checkpoint(trainer: Updater, step: int, root: Path) -> dict[str, Any]:
    """Save then load the trainable state + optimizer + scheduler with the project's
    :class:`CheckpointManager` (fsync'ed, atomic); the load follows the save, so it reads
    from the page cache."""
    shutil.rmtree(root, ignore_errors=True)
    manager = CheckpointManager(root, keep_last=1)
    start = time.perf_counter()
    shared = {
        "weights": trainable_state(trainer.model),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
    }
    path = manager.save(step, shared, {"rng": capture_rng()}, {"step": step})
    saved = time.perf_counter() - start
    start = time.perf_counter()
    loaded = manager.load(path)
    load_trainable_state(trainer.model, loaded.weights, path)
    trainer.optimizer.load_state_dict(loaded.optimizer)
    trainer.scheduler.load_state_dict(loaded.scheduler)
    read = time.perf_counter() - start
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    shutil.rmtree(root, ignore_errors=True)
    return {
        "save_seconds": round(saved, 3),
        "load_seconds": round(read, 3),
        "size_mb": round(sum(files.values()) / MB, 1),
        "weights_mb": round(files["weights.safetensors"] / MB, 1),
        "tensors": len(loaded.weights),
    }


def _decode_once(
    model: STModel, tokenizer: TargetTokenizer, wav: torch.Tensor, spec: StepSpec, engine: Engine
) -> tuple[float, str]:
    device = wav.device
    lengths = torch.tensor([wav.shape[1]], device=device)
    _sync(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        (hyp,) = generate_batch(
            model.translator,
            tokenizer,
            wav,
            lengths,
            ["fr"],
            num_beams=spec.num_beams,
            max_new_tokens=spec.max_new_tokens,
            engine=engine,
        )
    _sync(device)
    return time.perf_counter() - start, hyp


def time_decode(model: STModel, tokenizer: TargetTokenizer, spec: StepSpec) -> dict[str, Any]:
    """Beam search of one clip by our engine and by ``generate()`` under bf16 autocast.

    Each engine first decodes the clip untimed for 2 tokens: the first run at a new input
    length pays one-time kernel set-up (oneDNN primitives per shape) that would otherwise be
    charged to whichever engine runs first. The timed rounds alternate the engines, so both
    see the same machine load; each engine's fastest round counts.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(1)
    wav = (0.1 * torch.randn(1, int(spec.decode_seconds * SAMPLE_RATE), generator=gen)).to(device)
    model.eval()
    engines: tuple[Engine, ...] = ("samu", "generate")
    for engine in engines:
        _decode_once(model, tokenizer, wav, replace(spec, max_new_tokens=2), engine)
    rounds: dict[str, list[float]] = {engine: [] for engine in engines}
    texts: dict[str, str] = {}
    for _ in range(spec.decode_rounds):
        for engine in engines:
            seconds, texts[engine] = _decode_once(model, tokenizer, wav, spec, engine)
            rounds[engine].append(round(seconds, 3))
    model.train()
    out: dict[str, Any] = {"clip_seconds": spec.decode_seconds, "num_beams": spec.num_beams}
    for engine in engines:
        out[engine] = {"seconds": min(rounds[engine]), "rounds": rounds[engine]}
    # Random weights mostly pick ids beyond the small benchmark tokenizer, which decodes them
    # to nothing: equal texts are then no evidence (tests/test_beam.py checks the hypotheses).
    out["same_text"] = texts["samu"] == texts["generate"]
    out["text_chars"] = len(texts["samu"])
    return out


def count_update_flops(trainer: Updater, one: STBatch, clips: int) -> dict[str, int]:
    """Model FLOPs of an update of ``clips`` rows like ``one`` (a batch of one clip): forward,
    and forward + backward, counted by ``FlopCounterMode`` on one real forward/backward.

    Activation checkpointing is off for the count (recomputation is not model work) and the
    gradients are dropped afterwards. Counted: matmuls, convolutions, attention; the
    backward's activation gradients down to the first trainable module and the weight
    gradients of trainable parameters only (autograd computes none for frozen weights). Not
    counted: norms, activations, the optimizer. Rows of one length cost the same, so the
    count scales exactly with ``clips``. (On the ``meta`` device transformers' mask helpers
    fail: they read mask values.)
    """
    encoder = trainer.model.speech_encoder
    checkpointing = bool(encoder.is_activation_checkpointing)
    encoder.activation_checkpointing_disable()
    try:
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16):
            with FlopCounterMode(display=False) as forward, torch.no_grad():
                trainer.task.loss(trainer.model, one)
            with FlopCounterMode(display=False) as both:
                loss = trainer.task.loss(trainer.model, one).loss
        with FlopCounterMode(display=False) as backward:
            loss.backward()
    finally:
        trainer.optimizer.zero_grad(set_to_none=True)
        if checkpointing:
            encoder.activation_checkpointing_enable()
    update = both.get_total_flops() + backward.get_total_flops()
    return {"forward": int(forward.get_total_flops()) * clips, "update": int(update) * clips}


def _vocab(cfg: TranslatorConfig) -> int:
    return default_vocab_size(cfg.decoder)


def nominal_peak(name: str) -> float | None:
    """The data-sheet dense bf16 peak of a known GPU model, else None."""
    return next((v for k, v in NOMINAL_BF16_PEAK.items() if k in name), None)


def utilisation(
    flops: dict[str, int], seconds: float, spec: StepSpec, device: torch.device
) -> dict[str, Any]:
    """Achieved FLOP/s of the update and its fraction of the measured and nominal peaks."""
    achieved = flops["update"] / seconds
    # encoder_rtf's GEMM runs on the benchmarks' device: a CPU side on a GPU machine has none.
    measured = (
        gemm_peak(spec.gemm_n, torch.bfloat16) if device.type == bench_device().type else None
    )
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_model()
    nominal = nominal_peak(name) if device.type == "cuda" else None
    return {
        "device_name": name,
        "forward_gflop": round(flops["forward"] / 1e9, 3),
        "update_gflop": round(flops["update"] / 1e9, 3),
        "update_over_forward": round(flops["update"] / max(flops["forward"], 1), 3),
        "achieved_tflops": round(achieved / 1e12, 4),
        "bf16_gemm_peak_tflops": None if measured is None else round(measured / 1e12, 2),
        "mfu_of_gemm_peak": None if measured is None else round(achieved / measured, 4),
        "nominal_bf16_peak_tflops": None if nominal is None else round(nominal / 1e12, 1),
        "mfu": None if nominal is None else round(achieved / nominal, 4),
    }


def measure(
    model: dict[str, Any], spec: dict[str, Any], train: dict[str, Any], work: str, device: str
) -> dict[str, Any]:
    """Build the translator ``model`` describes on ``device`` and measure everything of the
    module docstring (JSON in, JSON out: :func:`benchmarks.side.run_side` may run it alone)."""
    cfg = from_dict(TranslatorConfig, model, where="paper_step.model")
    sp, train_cfg, dev = StepSpec(**spec), from_dict(TrainConfig, train), torch.device(device)
    torch.manual_seed(0)
    start = time.perf_counter()
    translator = build_translator(cfg, vocab_size=_vocab(cfg))
    build_seconds = time.perf_counter() - start
    counts = summarize(translator)
    st = STModel(translator).to(dev).train()
    tokenizer, texts = bench_tokenizer(sp)
    positions = int(translator.decoder.config.max_position_embeddings)
    batch = make_batch(tokenizer, texts, sp, positions)
    trainer = Updater.build(st, STTask(tokenizer, LABEL_SMOOTHING), train_cfg)
    release_freed_memory()
    updates = time_updates(trainer, batch.to(dev), sp)
    one = make_batch(tokenizer, texts[:1], replace(sp, clips=1), positions).to(dev)
    flops = count_update_flops(trainer, one, sp.clips)  # after: its memory stays in RSS
    return {
        "device": device,
        "spec": asdict(sp),
        "batch_seconds": sp.batch_seconds,
        "build_seconds": round(build_seconds, 2),
        "parameters": counts.total,
        "trainable_parameters": counts.trainable,
        "parameter_groups": counts.to_json()["groups"],
        "attention": _attention(translator),
        # the updates' attention on a CPU (time_updates, as the training loop's default)
        "update_attention": cpu_attention_name(train_cfg, dev) or "as built",
        "gradient_checkpointing": bool(st.speech_encoder.is_activation_checkpointing),
        "updates": updates,
        "memory_estimate": estimate_memory(updates),
        "utilisation": utilisation(flops, updates["seconds_per_update"], sp, dev),
        "checkpoint": time_checkpoint(trainer, sp.warmup + sp.updates, Path(work) / "ckpt"),
        "decode": time_decode(st, tokenizer, sp),
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
    }


def _attention(translator: nn.Module) -> dict[str, str]:
    """The attention implementation the model was built with, per half (SDPA expected); the
    timed updates on a CPU run samu_eager instead (``update_attention``)."""
    model = cast(Any, translator)
    return {
        "encoder": str(model.encoder.config._attn_implementation),
        "decoder": str(model.decoder.config._attn_implementation),
    }
