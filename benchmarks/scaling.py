"""Benchmark ``scaling``: seconds per step-3 update against batch seconds and model size.

Two curves of samu-st alone (no reference side), each point in a fresh process (clean peak
RSS), all on synthetic data: random audio in clips of 7.5 s (equal lengths, so the padded batch
seconds are the audio seconds) and random target sentences of 2 words per second of audio
(each word one token of a small BPE tokenizer, + </s>), collated by train-st's
:class:`~samu_st.steps.tasks_st.STCollator`. An update is the one of ``paper_step``
(:class:`benchmarks.paper_measure.Updater`): :class:`~samu_st.steps.tasks_st.STTask`'s loss
under bf16 autocast, backward, gradient norm, Adam and the tri-stage scheduler, in the order of
``samu_st.training.loop``, on a translator built by
:func:`~samu_st.models.translator.build_translator` (random weights; the pretrained folders are
never read). A few untimed warm-up updates, then the MEDIAN of the timed ones.

1. **Batch seconds** 15, 30, 60, 120, 240, 600 s at the ``mini`` size in ``st_train``'s set-up
   (what ``samu-st train-st configs/mini.yaml`` trains): ``mini`` encoder in ``adapters`` mode,
   2-layer length adaptor, ``mini`` MBART decoder with LNA-D, no gradient checkpointing.
2. **Model size** at a fixed 30-s batch in configs/paper.yaml's ``model:`` set-up (adapters,
   LNA-D, no length adaptor, gradient checkpointing of the encoder) with only the presets
   changed: ``tiny`` → ``mini`` → ``base`` → ``paper`` (XLS-R 300M + MBART-50, vocabulary
   250,054 + the new language tokens). ``base`` is no preset of the library: an XLS-R-like
   encoder of 12 layers of 768 (the 300M's conv front end) and an MBART decoder of 6 layers of
   768 (12 heads, FFN 3072, the small vocabulary of the non-paper presets), registered in the
   preset tables only while it is built (:func:`middle_presets`). The paper size runs 1 warm-up
   and 2 timed updates (one takes about a minute on one CPU thread).

On a GPU the model-size curve runs at 10-minute batches (the paper's, §2) and the paper size
with 2 warm-up + 3 timed updates. The plot (two panels, log axes) is written beside ``--out``
as ``scaling-<out file stem>.png``, else to ``benchmarks/results/scaling-<machine>.png``
(``--quick`` without ``--out``: into ``--work``).
"""

from __future__ import annotations

import contextlib
import datetime
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import Record, device, process_peak_rss_mb
from benchmarks.corpus import Context
from benchmarks.loops import ours_train_config
from benchmarks.paper_measure import (
    LABEL_SMOOTHING,
    WORDS,
    StepSpec,
    Updater,
    bench_tokenizer,
    make_batch,
    release_freed_memory,
    time_updates,
)
from benchmarks.paper_step import paper_model_config, paper_train_config
from benchmarks.side import run_side
from samu_st.atomic import atomic_write
from samu_st.models.decoder import DecoderConfig
from samu_st.models.encoder import EncoderConfig
from samu_st.models.encoder_presets import WAV2VEC2_PRESETS
from samu_st.models.summary import default_vocab_size, summarize
from samu_st.models.translator import TranslatorConfig, build_translator
from samu_st.steps.tasks_st import STModel, STTask

RESULTS = Path(__file__).resolve().parent / "results"
WORDS_PER_SECOND = 2.0  # target words (= tokens) per second of audio
LR = 1e-3  # st_train's peak LR (the batch curve's optimizer set-up)
LENGTH_ADAPTOR_LAYERS = 2  # st_train / configs/mini.yaml

# The middle size: XLS-R-like 12 layers of 768 (wav2vec2-base's shape with the 300M's conv
# front end and stable layer norm), an MBART decoder of 6 layers of 768 (mbart-base's shape).
BASE_ENCODER: dict[str, Any] = {
    **WAV2VEC2_PRESETS["paper"],
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
BASE_DECODER: dict[str, Any] = {
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "max_position_embeddings": 1024,
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}


@dataclass(frozen=True)
class Plan:
    """The points of one run."""

    batch_seconds: tuple[float, ...]  # the batch curve's x
    batch_size_preset: str  # its model size (st_train's set-up)
    clip_seconds: float  # every clip of every batch
    sizes: tuple[str, ...]  # the size curve's presets (paper.yaml's set-up)
    size_batch_seconds: float  # the size curve's batch
    warmup: int  # untimed updates per point
    updates: int  # timed updates per point (the median counts)
    paper_warmup: int  # the same at paper size
    paper_updates: int


CPU_PLAN = Plan((15.0, 30.0, 60.0, 120.0, 240.0, 600.0), "mini", 7.5,
                ("tiny", "mini", "base", "paper"), 30.0, 2, 3, 1, 2)  # fmt: skip
GPU_PLAN = replace(CPU_PLAN, size_batch_seconds=600.0, paper_warmup=2, paper_updates=3)
QUICK_PLAN = Plan((1.0, 2.0, 4.0), "tiny", 0.5, ("tiny", "mini"), 1.0, 1, 2, 1, 1)


@contextlib.contextmanager
def middle_presets() -> Iterator[None]:
    """``base`` in the encoder and decoder preset tables while the block runs (the library
    has no preset between ``mini`` and ``paper``; none is added to it)."""
    from samu_st.models import decoder as decoder_module

    tables: list[dict[str, dict[str, Any]]] = [WAV2VEC2_PRESETS, decoder_module._PRESETS]
    added = []
    for table, preset in zip(tables, (BASE_ENCODER, BASE_DECODER), strict=True):
        if "base" not in table:
            table["base"] = preset
            added.append(table)
    try:
        yield
    finally:
        for table in added:
            del table["base"]


def model_config(size: str, setup: str) -> TranslatorConfig:
    """``st_train``: the mini.yaml / st_train translator at ``size``; ``paper``: paper.yaml's
    ``model:`` section (pretrained folders dropped) at ``size``."""
    if setup == "st_train":
        return TranslatorConfig(
            encoder=EncoderConfig(size=size, mode="adapters"),  # type: ignore[arg-type]
            decoder=DecoderConfig(preset=size, trainable="lna"),  # type: ignore[arg-type]
            length_adaptor_layers=LENGTH_ADAPTOR_LAYERS,
        )
    cfg = paper_model_config()
    return replace(
        cfg,
        encoder=replace(cfg.encoder, size=size),  # type: ignore[arg-type]
        decoder=replace(cfg.decoder, preset=size),  # type: ignore[arg-type]
    )


def random_targets(spec: StepSpec, seed: int = 0) -> list[str]:
    """One random sentence of ``spec.target_words`` words per clip."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, spec.target_words)) for _ in range(spec.clips)]


def point(
    size: str,
    setup: str,
    batch_seconds: float,
    clip_seconds: float,
    warmup: int,
    updates: int,
    device_type: str,
) -> dict[str, Any]:
    """One point: build the translator, time ``warmup`` + ``updates`` updates of a batch of
    ``batch_seconds`` (JSON in and out: :func:`benchmarks.side.run_side` runs it alone)."""
    clips = max(1, round(batch_seconds / clip_seconds))
    words = max(1, round(clip_seconds * WORDS_PER_SECOND))
    spec = StepSpec(clips, clip_seconds, words, warmup, updates, 0.0, 0, 1, 1, 0)
    cfg = model_config(size, setup)
    dev = torch.device(device_type)
    torch.manual_seed(0)
    start = time.perf_counter()
    with middle_presets():
        translator = build_translator(cfg, vocab_size=default_vocab_size(cfg.decoder))
    build_seconds = time.perf_counter() - start
    counts = summarize(translator)
    model = STModel(translator).to(dev).train()
    tokenizer, _ = bench_tokenizer(spec)  # every word of WORDS is one token
    positions = int(translator.decoder.config.max_position_embeddings)
    batch = make_batch(tokenizer, random_targets(spec), spec, positions).to(dev)
    train_cfg = (
        ours_train_config(warmup + updates, LR) if setup == "st_train" else paper_train_config()
    )
    updater = Updater.build(model, STTask(tokenizer, LABEL_SMOOTHING), train_cfg)
    release_freed_memory()
    timed = time_updates(updater, batch, spec)
    seconds = statistics.median(timed["update_seconds"][warmup:])
    return {
        "size": size,
        "setup": setup,
        "batch_seconds": spec.batch_seconds,
        "clips": clips,
        "clip_seconds": clip_seconds,
        "target_tokens": timed["target_tokens"],
        "parameters": counts.total,
        "trainable_parameters": counts.trainable,
        "gradient_checkpointing": bool(model.speech_encoder.is_activation_checkpointing),
        "length_adaptor_layers": cfg.length_adaptor_layers,
        "build_seconds": round(build_seconds, 2),
        "warmup_updates": warmup,
        "update_seconds": timed["update_seconds"],
        "seconds_per_update": round(seconds, 3),
        "audio_sec_per_sec": round(spec.batch_seconds / seconds, 3),
        "peak_memory_during_updates_mb": timed["peak_memory_during_updates_mb"],
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
    }


def _machine_slug() -> str:
    import os

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).split()[-1].lower()
        return f"cuda-{name}"
    return f"cpu-{os.cpu_count()}core"


def plot_path(ctx: Context) -> Path:
    """Beside ``--out`` (``scaling-<stem>.png``), else ``benchmarks/results`` (``--quick``:
    ``--work``)."""
    if ctx.out is not None:
        return ctx.out.parent / f"scaling-{ctx.out.stem}.png"
    folder = ctx.work if ctx.quick else RESULTS
    return folder / f"scaling-{_machine_slug()}{'-quick' if ctx.quick else ''}.png"


def _label(value: float) -> str:
    return f"{value:.3g}"


def plot(
    batch_curve: list[dict[str, Any]], size_curve: list[dict[str, Any]], title: str, path: Path
) -> Path:
    """Two panels: s/update against batch seconds, and against parameters (log axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(11.0, 4.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    xs = [p["batch_seconds"] for p in batch_curve]
    ys = [p["seconds_per_update"] for p in batch_curve]
    left.plot(xs, ys, marker="o", color="tab:blue")
    for x, y in zip(xs, ys, strict=True):
        left.annotate(_label(y), (x, y), textcoords="offset points", xytext=(0, 6),
                      ha="center", fontsize=8)  # fmt: skip
    if xs:  # what a cost proportional to the batch would give, from the first point
        left.plot(xs, [ys[0] * x / xs[0] for x in xs], linestyle="--", color="tab:gray",
                  linewidth=1, label="proportional to the batch")  # fmt: skip
        left.legend(fontsize=8, loc="upper left")
    size = batch_curve[0]["size"] if batch_curve else "?"
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(xs, [f"{x:g}" for x in xs])
    left.set_xlabel("batch (seconds of padded audio)")
    left.set_ylabel("seconds per update (median)")
    left.set_title(f"{size} size (st_train set-up): s/update vs batch", fontsize=10)
    left.grid(alpha=0.3, which="both")
    xs = [p["parameters"] for p in size_curve]
    ys = [p["seconds_per_update"] for p in size_curve]
    right.plot(xs, ys, marker="o", color="tab:orange")
    for p, x, y in zip(size_curve, xs, ys, strict=True):
        trained = p["trainable_parameters"] / 1e6
        text = f"{p['size']}: {_label(y)} s\n{x / 1e6:.3g}M ({trained:.3g}M trained)"
        right.annotate(text, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)
    batch = size_curve[0]["batch_seconds"] if size_curve else 0
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("parameters (total, log scale)")
    right.set_ylabel("seconds per update (median)")
    right.set_title(f"{batch:g}-s batch (paper.yaml set-up): s/update vs model size", fontsize=10)
    right.grid(alpha=0.3, which="both")
    right.margins(x=0.25, y=0.3)
    for axes in (left, right):
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    figure.suptitle(title, fontsize=10)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), point="plot")


def title(machine: dict[str, Any], when: datetime.datetime) -> str:
    """The plot's two-line title: what ran, on which machine, when."""
    m = machine
    return (
        f"samu-st step-3 update (adapters + LNA-D, bf16 autocast) on {m['device']}\n"
        f"{m['cpu_model']}, {m['torch_threads']} thread(s), torch {m['torch']}, "
        f"{when:%Y-%m-%d %H:%M} UTC, load {m['loadavg'][0]:.1f}"
    )


def run(ctx: Context) -> Record:
    rec = Record("scaling", ctx.quick)
    dev = device()
    plan = QUICK_PLAN if ctx.quick else GPU_PLAN if dev.type == "cuda" else CPU_PLAN
    common = {"clip_seconds": plan.clip_seconds, "device_type": dev.type}
    batch_curve = []
    for seconds in plan.batch_seconds:
        kwargs = {
            **common,
            "size": plan.batch_size_preset,
            "setup": "st_train",
            "batch_seconds": seconds,
            "warmup": plan.warmup,
            "updates": plan.updates,
        }
        batch_curve.append(run_side("scaling:point", kwargs, ctx.isolate))
    size_curve = []
    for size in plan.sizes:
        paper = size == "paper"
        kwargs = {
            **common,
            "size": size,
            "setup": "paper",
            "batch_seconds": plan.size_batch_seconds,
            "warmup": plan.paper_warmup if paper else plan.warmup,
            "updates": plan.paper_updates if paper else plan.updates,
        }
        size_curve.append(run_side("scaling:point", kwargs, ctx.isolate))
    when = datetime.datetime.fromtimestamp(rec.started, datetime.timezone.utc)
    path = plot(batch_curve, size_curve, title(rec.machine, when), plot_path(ctx))
    rec.setup = {
        "data": f"synthetic: random audio in clips of {plan.clip_seconds:g} s (equal lengths: "
        f"padded seconds = audio seconds), random targets of {WORDS_PER_SECOND:g} words "
        "(one token each) per audio second + </s>",
        "batch_curve": f"{plan.batch_size_preset} encoder + decoder presets, st_train set-up "
        f"(adapters, {LENGTH_ADAPTOR_LAYERS}-layer length adaptor, LNA-D, no gradient "
        f"checkpointing), batch seconds {list(plan.batch_seconds)}",
        "size_curve": f"configs/paper.yaml model: set-up (adapters, no length adaptor, LNA-D, "
        f"gradient checkpointing) at presets {list(plan.sizes)}, {plan.size_batch_seconds:g}-s "
        "batch",
        "base_preset": {"encoder": BASE_ENCODER, "decoder": BASE_DECODER},
        "updates_per_point": f"{plan.warmup} warm-up + {plan.updates} timed (paper size: "
        f"{plan.paper_warmup} + {plan.paper_updates}); the median of the timed counts",
        "points_in_own_process": ctx.isolate,
    }
    by_batch = {f"{p['batch_seconds']:g}": p["seconds_per_update"] for p in batch_curve}
    by_size = {p["size"]: p["seconds_per_update"] for p in size_curve}
    rec.ours = {
        "method": "paper_measure.Updater (STTask loss under bf16 autocast, backward, grad "
        "norm, Adam + tri-stage LR: the training loop's order) on build_translator models, "
        "adapters + LNA-D train",
        "seconds_per_update_by_batch_seconds": by_batch,
        "seconds_per_update_by_size": by_size,
        "largest_size_seconds_per_update": size_curve[-1]["seconds_per_update"],
        "plot": str(path),
        "batch_curve": batch_curve,
        "size_curve": size_curve,
    }
    rec.reference = {
        "method": "none: scaling curves of samu-st alone",
        "available": False,
        "reason": "no reference side: the figures are samu-st's own curves",
    }
    rec.ratios = {"scaling": None}
    rec.headline = "scaling"
    rec.notes = [
        "random weights and data: timings do not depend on them",
        "peak RSS per point: process_peak_rss_mb (ru_maxrss of the point's own process when "
        "points_in_own_process, else of the whole runner) and the RSS sampled during the "
        "updates (peak_memory_during_updates_mb; on a GPU max allocated)",
        "the size curve's mini point differs from the batch curve's 30-s point by its set-up "
        "(gradient checkpointing, no length adaptor): only the presets change along a curve",
        "base is not a library preset: XLS-R-like 12 x 768 encoder, MBART 6 x 768 decoder, "
        "vocabulary of the non-paper presets (setup.base_preset)",
        "on a GPU the size curve runs at 10-minute batches (the paper's)",
        "machine shared with other jobs: timings are upper bounds",
    ]
    return rec
