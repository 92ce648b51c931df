"""Benchmark ``ctc_train``: CTC fine-tuning throughput and peak memory.

Ours: the ``samu-st train-ctc`` machinery (:mod:`samu_st.steps.train_ctc`): normalised
transcripts, character vocabulary, the label-length filter, ``Wav2Vec2ForCTC`` built by
:func:`~samu_st.models.ctc.build_ctc_model` (conv front end frozen), :class:`CtcTask` and
:class:`CtcCollator` in :func:`samu_st.training.train` with duration-bucketed batches (40 s,
configs/mini.yaml ``train_ctc``) and bf16 autocast.

Reference (same work): the XLSR notebook's recipe: the same ``Wav2Vec2ForCTC`` architecture
and encoder settings, ``freeze_feature_encoder()``, a ``DataCollatorCTCWithPadding``-like
collator, and ``Trainer`` with ``group_by_length`` and ``bf16=True`` (``use_cpu``: bf16
autocast on the CPU, as ours), the batch size giving the same mean audio per batch, on a
``datasets.Dataset`` of feature-extractor outputs (preprocessing not timed).
Reference as the notebook does it (``reference_notebook``): the same in fp32.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

from benchmarks.common import (
    AutocastProbe,
    PeakMemory,
    Record,
    fresh_accelerate_state,
    ratio,
)
from benchmarks.corpus import Context, Sizes, read_split
from benchmarks.loops import (
    StepTimer,
    TimedTask,
    ours_train_config,
    reference_arguments,
    timed_window,
    trainer_settings,
)
from benchmarks.padding import matched_batch_size
from benchmarks.side import interleaved_sides
from benchmarks.st_train import PaddingCollator, counts
from samu_st.audio import SAMPLE_RATE, load_audio
from samu_st.models.ctc import build_ctc_model, default_feature_extractor
from samu_st.models.encoder import EncoderConfig, wav2vec2_config
from samu_st.steps.data import DataConfig, build_sampler
from samu_st.steps.tasks_ctc import CtcTask, encode_labels, output_frames
from samu_st.steps.train_ctc import CtcSplit, load_split, load_tokenizer, prepare_split
from samu_st.text import build_char_vocab, save_vocab
from samu_st.training import train

LR = 1e-3  # both sides' peak LR (configs/mini.yaml train_ctc)
ROUNDS = 2  # interleaved rounds of the three sides (a shared machine's load changes)
NORMALIZER = "generic"


def encoder_config(sz: Sizes) -> EncoderConfig:
    """configs/mini.yaml's train_ctc encoder settings (the notebook's, masking made milder)."""
    return EncoderConfig(
        size=sz.encoder,  # type: ignore[arg-type]
        mode="full",
        train_feature_encoder=False,
        mask_time_prob=0.05,
        mask_time_length=2 if sz.encoder == "tiny" else 5,
        layerdrop=0.0,
        attention_dropout=0.1,
        hidden_dropout=0.1,
        feat_proj_dropout=0.0,
    )


def ctc_data(
    corpus: str, sz: Sizes, out_dir: str
) -> tuple[DataConfig, Wav2Vec2CTCTokenizer, CtcSplit]:
    """The train split as ``train-ctc`` prepares it: vocabulary, labels, length filter."""
    data = DataConfig(manifests=(corpus,), max_duration=sz.ctc_max_duration)
    loaded = load_split(data, NORMALIZER, train=True)
    vocab = Path(out_dir) / "vocab.json"
    vocab.parent.mkdir(parents=True, exist_ok=True)
    save_vocab(build_char_vocab(loaded[1]), vocab)
    tokenizer = load_tokenizer(vocab)
    conv = wav2vec2_config(encoder_config(sz))
    kernel, stride = conv.conv_kernel, conv.conv_stride

    def frames_of(samples: torch.Tensor) -> torch.Tensor:
        return output_frames(samples, kernel, stride)

    split = prepare_split(data, loaded, tokenizer, frames_of, "train")
    return data, tokenizer, split


def ours(corpus: str, sizes: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """One side: samu-st's CTC training (runs in its own process)."""
    fresh_accelerate_state()
    sz = Sizes(**sizes)
    data, tokenizer, split = ctc_data(corpus, sz, f"{out_dir}-data")
    sampler = build_sampler(data, split.dataset)
    torch.manual_seed(1)
    model = build_ctc_model(encoder_config(sz), tokenizer.vocab_size, int(tokenizer.pad_token_id))
    task = TimedTask(CtcTask(tokenizer, model.config.conv_kernel, model.config.conv_stride))
    with PeakMemory() as mem:
        train(
            task,
            model,
            split.dataset,
            split.collator,
            sampler,
            ours_train_config(sz.ctc_steps, LR),
            out_dir,
        )
    return {
        **timed_window(task.per_update(), sz.warmup + 1, sz.ctc_steps - 1),
        **mem.summary(),
        **counts(model),
        "utterances": len(split.dataset),
        "mean_padding": round(sum(task.padding) / len(task.padding), 4),
        "precision": "bf16 autocast" if mem.cuda_peak is None else "bf16 (GPU mixed precision)",
    }


def reference(
    corpus: str, sizes: dict[str, Any], out_dir: str, batch_size: int, bf16: bool = True
) -> dict[str, Any]:
    """One side: the notebook's ``Trainer`` recipe on ``Wav2Vec2ForCTC`` (``bf16``: with
    ``TrainingArguments(bf16=True)``, else fp32 as the notebook on a CPU)."""
    import datasets
    from transformers import Trainer

    fresh_accelerate_state()
    sz = Sizes(**sizes)
    _, tokenizer, split = ctc_data(corpus, sz, f"{out_dir}-data")
    extractor = default_feature_extractor()
    columns: dict[str, list[Any]] = {"input_values": [], "labels": [], "length": []}
    for utt, ids in zip(
        split.dataset.utterances, encode_labels(split.texts, tokenizer), strict=True
    ):
        values = extractor(load_audio(utt.audio), sampling_rate=SAMPLE_RATE).input_values[0]
        columns["input_values"].append(values)
        columns["labels"].append(ids)
        columns["length"].append(len(values))
    dataset = datasets.Dataset.from_dict(columns)
    config = wav2vec2_config(
        encoder_config(sz),
        vocab_size=tokenizer.vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction="mean",
    )
    torch.manual_seed(1)
    model = Wav2Vec2ForCTC(config)
    model.freeze_feature_encoder()
    collator = PaddingCollator(extractor)
    timer = StepTimer()
    args = reference_arguments(out_dir, batch_size, sz.ctc_steps, LR, seq2seq=False, bf16=bf16)
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer]
    )
    autocast = AutocastProbe(model.wav2vec2)  # accelerate wraps the top forward itself
    with PeakMemory() as mem, contextlib.redirect_stdout(sys.stderr):
        trainer.train()  # it prints a metrics dict: keep stdout for the JSON lines
    return {
        **timed_window(timer.per_update(collator.audio), sz.warmup + 1, sz.ctc_steps - 1),
        **mem.summary(),
        **counts(model),
        "utterances": len(dataset),
        "mean_padding": round(sum(collator.padding) / len(collator.padding), 4),
        "autocast_bf16_seen": autocast.seen,
        "precision": "bf16 (TrainingArguments bf16=True)" if bf16 else "fp32",
        "attention": str(model.config._attn_implementation),
    }


def run(ctx: Context) -> Record:
    sz = ctx.sizes
    rec = Record("ctc_train", ctx.quick)
    corpus = ctx.corpus()
    durations = [u.duration for u in read_split(corpus, "train")]
    batch_size = matched_batch_size(durations, sz.ctc_max_duration)
    common = {"corpus": str(corpus), "sizes": vars(sz)}
    reference = {**common, "batch_size": batch_size}
    sides = [("ctc_train:ours", common)] + [
        ("ctc_train:reference", {**reference, "bf16": bf16}) for bf16 in (True, False)
    ]
    mine, theirs, notebook = interleaved_sides(sides, ctx.work, ctx.isolate, ROUNDS)
    memory = "cuda_max_allocated_mb" if mine.get("cuda_max_allocated_mb") else "peak_rss_mb"
    rec.setup = {
        "data": "mini-CoVoST train split (source transcripts, generic normaliser)",
        "encoder": f"{sz.encoder} preset, conv front end frozen",
        "updates_per_side": sz.ctc_steps,
        "warmup_updates_not_timed": sz.warmup,
        "ours_max_duration_seconds": sz.ctc_max_duration,
        "reference_batch_size": batch_size,
        "peak_lr": LR,
        "sides_in_own_process": ctx.isolate,
    }
    rec.ours = {
        "method": "samu_st.training.train + CtcTask/CtcCollator (train-ctc), "
        "DurationBatchSampler, bf16 autocast",
        **mine,
    }
    rec.reference = {
        "method": "Trainer(group_by_length, bf16=True, use_cpu=True) on Wav2Vec2ForCTC, "
        "freeze_feature_encoder",
        "settings": trainer_settings(
            "Trainer", batch_size, LR, theirs.get("attention"), gradient_checkpointing=False
        ),
        "available": True,
        **theirs,
    }
    rec.extra["reference_notebook"] = {
        "method": "Trainer(group_by_length) on Wav2Vec2ForCTC, freeze_feature_encoder, fp32 "
        "(as the notebook does it on a CPU)",
        "available": True,
        **notebook,
    }
    rec.ratios = {
        "throughput": ratio(mine["audio_sec_per_sec"], theirs["audio_sec_per_sec"], True),
        "peak_memory": ratio(mine[memory], theirs[memory], False),
        "throughput_vs_notebook": ratio(
            mine["audio_sec_per_sec"], notebook["audio_sec_per_sec"], True
        ),
        "peak_memory_vs_notebook": ratio(mine[memory], notebook[memory], False),
    }
    rec.headline = "throughput"
    rec.notes = [
        "throughput = audio seconds per wall second over the same updates of every side",
        "both sides train the same utterances (train-ctc's label-length filter applied)",
        "the three sides run in turn, twice; each side's faster round counts (all_rounds_*)",
        "headline (same work): the reference under TrainingArguments(bf16=True, use_cpu=True), "
        "bf16 autocast as ours (train.cpu_bf16); 'autocast_bf16_seen' checks it took effect",
        "reference_notebook: fp32 as HF users run the notebook on a CPU (its fp16 needs a GPU)",
        "the notebook also sets gradient_checkpointing=True and gradient_accumulation_steps=2; "
        "both are off here so as not to slow the reference down (one batch per update)",
        f"peak memory = {memory} during training; the reference holds the preprocessed "
        "train split in memory (a datasets.Dataset), ours decodes clips on the fly",
    ]
    return rec
