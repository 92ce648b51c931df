"""Benchmark ``st_train``: speech-translation training throughput and peak memory.

Ours: step 3 as ``samu-st train-st`` runs it — the ``mini`` encoder in ``adapters`` mode
(frozen, two bottleneck adapters per layer, the conv front end outside autograd), a 2-layer
length adaptor, the ``mini`` MBART decoder with LNA-D, :class:`~samu_st.steps.tasks_st.STTask`
(label-smoothed CE) in :func:`samu_st.training.train` with duration-bucketed batches
(:class:`~samu_st.data.sampler.DurationBatchSampler`, 60 s) and bf16 autocast on the CPU
(``train.cpu_bf16``, configs/mini.yaml), with the loop's CPU defaults: transformers' eager
attention with the fast CPU dropout (``train.cpu_attention``, ``train.cpu_dropout``), the
frozen weights stored in bf16, the grouped positional conv channels-last.

Reference (same work): the same architecture as a plain ``SpeechEncoderDecoderModel``
(``Wav2Vec2Model`` with transformers' own length adaptor + ``MBartForCausalLM``) training the
same parameters: the encoder frozen (``freeze_feature_encoder`` + ``requires_grad_(False)``)
with the same bottleneck adapters (transformers has none for wav2vec2, so the closest
equivalent is ours, :func:`samu_st.models.adapters.add_bottleneck_adapters`, on its encoder),
LNA-D in the decoder (cross-attention + layer norms), trained by ``Seq2SeqTrainer`` with
``bf16=True`` (``use_cpu``: bf16 autocast on the CPU) and ``group_by_length``, SDPA, on a
``datasets.Dataset`` of feature-extractor outputs (the notebook's preprocessing, done before
training and not timed) with the batch size that gives the same mean audio per batch. Both
sides' trainable-parameter counts are asserted equal.

Reference as the notebook does it (``reference_notebook``): the same model with every
parameter trainable, fp32.

Both sides train the mini-CoVoST train split for the same number of updates with the same
peak LR; each side runs in its own process, and the same updates (after a warm-up) are timed.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    MBartForCausalLM,
    SpeechEncoderDecoderModel,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

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
from samu_st.audio import SAMPLE_RATE, load_audio
from samu_st.losses import IGNORE_INDEX
from samu_st.models.adapters import add_bottleneck_adapters, bottleneck_adapters
from samu_st.models.ctc import default_feature_extractor
from samu_st.models.decoder import (
    DecoderConfig,
    apply_lna_d,
    as_decoder_config,
    mbart_config,
)
from samu_st.models.encoder import EncoderConfig, wav2vec2_config
from samu_st.models.front_end_cache import make_front_end_cache
from samu_st.models.tokenizer import TargetTokenizer
from samu_st.models.translator import TranslatorConfig, build_translator
from samu_st.steps.data import DataConfig, build_sampler, load_dataset
from samu_st.steps.tasks_st import STCollator, STModel, STTask
from samu_st.training import train

LR = 1e-3  # both sides' peak learning rate (configs/mini.yaml train_st)
LENGTH_ADAPTOR_LAYERS = 2


def counts(model: torch.nn.Module) -> dict[str, int]:
    params = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
    }


def ours(
    corpus: str,
    tokenizer: str,
    sizes: dict[str, Any],
    out_dir: str,
    front_end_cache_mb: int = 0,
) -> dict[str, Any]:
    """One side: samu-st's step-3 training (runs in its own process).

    With ``front_end_cache_mb`` (configs/mini.yaml: 256) the frozen conv stack's outputs are
    kept per clip (:mod:`samu_st.models.front_end_cache`); it first trains one whole epoch,
    untimed but recorded (``first_epoch``, every clip computed), then the timed updates, which
    the cache serves as in every later epoch of a real run."""
    fresh_accelerate_state()
    sz = Sizes(**sizes)
    data = DataConfig(
        manifests=(corpus,), max_duration=sz.st_max_duration, front_end_cache_mb=front_end_cache_mb
    )
    dataset = load_dataset(data)
    sampler = build_sampler(data, dataset)
    skip = len(sampler) if front_end_cache_mb else 0  # the epoch that fills the cache
    tok = TargetTokenizer.load(tokenizer)
    cfg = TranslatorConfig(
        encoder=EncoderConfig(size=sz.encoder, mode="adapters"),  # type: ignore[arg-type]
        decoder=DecoderConfig(preset=sz.decoder, trainable="lna"),  # type: ignore[arg-type]
        length_adaptor_layers=LENGTH_ADAPTOR_LAYERS,
    )
    torch.manual_seed(1)
    cache = make_front_end_cache(front_end_cache_mb)
    model = STModel(build_translator(cfg, tok), front_end_cache=cache)
    positions = int(model.translator.decoder.config.max_position_embeddings)
    task = TimedTask(STTask(tok))
    with PeakMemory() as mem:
        train(
            task,
            model,
            dataset,
            STCollator(tok, positions),
            sampler,
            ours_train_config(skip + sz.st_steps, LR),
            out_dir,
        )
    extra: dict[str, Any] = {}
    if skip and cache is not None:
        first = timed_window(task.per_update(), sz.warmup + 1, skip)
        extra = {
            "front_end_cache_mb": front_end_cache_mb,
            "first_epoch": {"updates": skip, **first},
            "front_end_cache": {**vars(cache.stats), "megabytes": round(cache.bytes / 2**20, 1)},
        }
    return {
        **timed_window(task.per_update(), skip + sz.warmup + 1, skip + sz.st_steps - 1),
        **mem.summary(),
        **counts(model.translator),
        "mean_padding": round(sum(task.padding) / len(task.padding), 4),
        "precision": "bf16 autocast" if mem.cuda_peak is None else "bf16 (GPU mixed precision)",
        **extra,
    }


class PaddingCollator:
    """The HF examples' speech seq2seq collator, which is also the notebook's
    ``DataCollatorCTCWithPadding``: feature-extractor padding of the audio, labels padded with
    -100; records each batch's audio seconds and padding."""

    def __init__(self, extractor: Wav2Vec2FeatureExtractor) -> None:
        self.extractor = extractor
        self.audio: list[float] = []
        self.padding: list[float] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.extractor.pad(
            [{"input_values": f["input_values"]} for f in features],
            padding=True,
            return_tensors="pt",
        )
        width = max(len(f["labels"]) for f in features)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.long)
        batch["labels"] = labels
        samples = sum(len(f["input_values"]) for f in features)
        self.audio.append(samples / SAMPLE_RATE)
        self.padding.append(1.0 - samples / batch["input_values"].numel())
        return dict(batch)


def reference_translator(sz: Sizes, tok: TargetTokenizer) -> SpeechEncoderDecoderModel:
    """The same architecture, assembled the plain transformers way (everything trains)."""
    preset = EncoderConfig(size=sz.encoder)  # type: ignore[arg-type]
    hidden = wav2vec2_config(preset).hidden_size
    # The preset's numbers with transformers' own length adaptor; wav2vec2_config names SDPA,
    # which is also what transformers 5 picks by default.
    encoder_config = wav2vec2_config(
        preset,
        add_adapter=True,
        num_adapter_layers=LENGTH_ADAPTOR_LAYERS,
        adapter_kernel_size=3,
        adapter_stride=2,
        output_hidden_size=hidden,
    )
    decoder_config = as_decoder_config(mbart_config(sz.decoder, len(tok)), None)  # type: ignore[arg-type]
    model = SpeechEncoderDecoderModel(
        encoder=Wav2Vec2Model(encoder_config), decoder=MBartForCausalLM(decoder_config)
    )
    model.config.decoder_start_token_id = tok.decoder_start_id
    model.config.pad_token_id = tok.pad_id
    return model


def reference_dataset(corpus: Path, tok: TargetTokenizer) -> Any:
    """The notebook's preprocessing: decoded, normalised audio, label ids and a length column.

    Labels are ``[<language>, y…, </s>]``: with the decoder start prepended by the model,
    the decoder reads ``[start, <language>, y…]`` as ours does.
    """
    import datasets

    extractor = default_feature_extractor()
    columns: dict[str, list[Any]] = {"input_values": [], "labels": [], "length": []}
    utts = read_split(corpus, "train")
    targets = tok.encode([u.target_text for u in utts])
    for utt, ids in zip(utts, targets, strict=True):
        values = extractor(load_audio(utt.audio), sampling_rate=SAMPLE_RATE).input_values[0]
        columns["input_values"].append(values)
        columns["labels"].append([tok.lang_token_id(utt.language), *ids])
        columns["length"].append(len(values))
    return datasets.Dataset.from_dict(columns)


def same_trainable_set(model: SpeechEncoderDecoderModel) -> None:
    """Train what ours trains: bottleneck adapters (ours: transformers has none for wav2vec2),
    the length adaptor, the projection and LNA-D; the conv front end outside autograd."""
    encoder = cast(Wav2Vec2Model, model.encoder)
    add_bottleneck_adapters(encoder)
    encoder.requires_grad_(False)
    encoder.freeze_feature_encoder()
    for adapter in bottleneck_adapters(encoder):
        adapter.requires_grad_(True)
    if encoder.adapter is not None:
        encoder.adapter.requires_grad_(True)
    apply_lna_d(model.decoder)


def reference(
    corpus: str,
    tokenizer: str,
    sizes: dict[str, Any],
    out_dir: str,
    batch_size: int,
    same_work: bool = True,
    attention: str = "sdpa",
) -> dict[str, Any]:
    """One side: ``Seq2SeqTrainer`` on a plain ``SpeechEncoderDecoderModel``; ``same_work``:
    ours' trainable set under ``bf16=True``, else everything trainable in fp32 (notebook).
    ``attention``: transformers' ``attn_implementation`` of encoder and decoder (``sdpa``, its
    default, or ``eager``: explicit matmul + softmax, what our CPU default
    ``train.cpu_attention: eager`` also runs)."""
    from transformers import Seq2SeqTrainer

    fresh_accelerate_state()
    sz = Sizes(**sizes)
    tok = TargetTokenizer.load(tokenizer)
    dataset = reference_dataset(Path(corpus), tok)
    torch.manual_seed(1)
    model = reference_translator(sz, tok)
    if same_work:
        same_trainable_set(model)
    model.encoder.set_attn_implementation(attention)
    model.decoder.set_attn_implementation(attention)
    collator = PaddingCollator(default_feature_extractor())
    timer = StepTimer()
    args = reference_arguments(out_dir, batch_size, sz.st_steps, LR, seq2seq=True, bf16=same_work)
    trainer = Seq2SeqTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer]
    )
    autocast = AutocastProbe(model.decoder)  # accelerate wraps the top forward itself
    with PeakMemory() as mem, contextlib.redirect_stdout(sys.stderr):
        trainer.train()  # it prints a metrics dict: keep stdout for the JSON lines
    return {
        **timed_window(timer.per_update(collator.audio), sz.warmup + 1, sz.st_steps - 1),
        **mem.summary(),
        **counts(model),
        "mean_padding": round(sum(collator.padding) / len(collator.padding), 4),
        "autocast_bf16_seen": autocast.seen,
        "precision": "bf16 (Seq2SeqTrainingArguments bf16=True)" if same_work else "fp32",
        "attention": str(model.encoder.config._attn_implementation),
        "decoder_attention": str(model.decoder.config._attn_implementation),
    }


NOTES = [
    "throughput = audio seconds per wall second over the same updates of every side",
    "headline (same work): the reference trains the same parameters as ours (count asserted "
    "equal: 'trainable_parameters') under Seq2SeqTrainingArguments(bf16=True, use_cpu=True), "
    "i.e. bf16 autocast as ours (train.cpu_bf16)",
    "the reference's bottleneck adapters are samu_st.models.adapters.add_bottleneck_adapters "
    "on its Wav2Vec2Model (transformers has no wav2vec2 bottleneck adapters: the closest "
    "equivalent), its LNA-D is samu_st.models.decoder.apply_lna_d on its MBartForCausalLM",
    "reference_notebook: the same model with every parameter trainable, fp32, as a plain HF "
    "user runs it on a CPU (the earlier headline; method and precision differ from ours)",
    "the references' preprocessing (decode + normalise, as the notebook's map()) is not "
    "timed; ours decodes audio inside the timed updates",
    "loss: ours label-smoothed CE (0.1), the references the model's plain CE",
    "transformers' default attention is SDPA (checked: reference 'attention')",
    "the three sides run in turn, twice; each side's faster round counts (all_rounds_*)",
]
FRONT_END_CACHE_MB = 256  # configs/mini.yaml train_st.data.front_end_cache_mb
ROUNDS = 2  # interleaved rounds of the three sides (a shared machine's load changes)
TARGET_SAME_PRECISION = 1.5  # the issue: same-precision, same-work training >= 1.5x


def _sides(ctx: Context, common: dict[str, Any], batch_size: int) -> list[dict[str, Any]]:
    """Ours, the same-work reference, the notebook reference; each in its own process, in
    ``ROUNDS`` interleaved rounds (one with ``--quick``); each side's best round."""
    reference = {**common, "batch_size": batch_size}
    cached = {**common, "front_end_cache_mb": FRONT_END_CACHE_MB}
    sides = [
        ("st_train:ours", cached),
        ("st_train:ours", common),
        ("st_train:reference", {**reference, "same_work": True, "attention": "sdpa"}),
        ("st_train:reference", {**reference, "same_work": True, "attention": "eager"}),
        ("st_train:reference", {**reference, "same_work": False}),
    ]
    return interleaved_sides(sides, ctx.work, ctx.isolate, ROUNDS)


def run(ctx: Context) -> Record:
    sz = ctx.sizes
    rec = Record("st_train", ctx.quick)
    corpus, tokenizer = ctx.corpus(), ctx.tokenizer()
    durations = [u.duration for u in read_split(corpus, "train")]
    batch_size = matched_batch_size(durations, sz.st_max_duration)
    common = {"corpus": str(corpus), "tokenizer": str(tokenizer), "sizes": vars(sz)}
    mine, plain, sdpa, eager, notebook = _sides(ctx, common, batch_size)
    # the reference's best attention implementation is its headline
    theirs, other = sorted((sdpa, eager), key=lambda side: -side["audio_sec_per_sec"])
    if mine["trainable_parameters"] != theirs["trainable_parameters"]:
        raise AssertionError(
            f"trainable parameters differ: ours {mine['trainable_parameters']}, "
            f"reference {theirs['trainable_parameters']}"
        )
    memory = "cuda_max_allocated_mb" if mine.get("cuda_max_allocated_mb") else "peak_rss_mb"
    rec.setup = {
        "data": "mini-CoVoST train split",
        "utterances": len(durations),
        "encoder": f"{sz.encoder} preset",
        "decoder": f"{sz.decoder} preset",
        "trainable_parameters_both_sides": mine["trainable_parameters"],
        "updates_per_side": sz.st_steps,
        "warmup_updates_not_timed": sz.warmup,
        "ours_max_duration_seconds": sz.st_max_duration,
        "reference_batch_size": batch_size,
        "peak_lr": LR,
        "sides_in_own_process": ctx.isolate,
    }
    rec.ours = {
        "method": "samu_st.training.train + STTask/STModel, adapters + LNA-D, "
        "DurationBatchSampler, bf16 autocast, front-end cache (as configs/mini.yaml), the "
        "loop's CPU defaults (eager attention + fast CPU dropout, bf16 frozen weights, "
        "channels-last positional conv); "
        "timed after one whole epoch (the cache's fill, recorded as first_epoch)",
        **mine,
    }
    rec.extra["ours_no_front_end_cache"] = {
        "method": "the same without the front-end cache (front_end_cache_mb 0): every epoch "
        "as the first",
        **plain,
    }
    rec.reference = {
        "method": "Seq2SeqTrainer(group_by_length, bf16=True, use_cpu=True) on "
        "SpeechEncoderDecoderModel: frozen encoder + the same bottleneck adapters "
        "(add_bottleneck_adapters), transformers' length adaptor, LNA-D decoder, "
        f"attn_implementation {theirs.get('attention')} (the faster of sdpa and eager)",
        "settings": trainer_settings(
            "Seq2SeqTrainer",
            batch_size,
            LR,
            theirs.get("attention"),
            trainable="bottleneck adapters, length adaptor, enc_to_dec_proj, LNA-D",
        ),
        "available": True,
        **theirs,
    }
    rec.extra["reference_other_attention"] = {
        "method": "the same-work reference with its other attn_implementation (the faster of "
        "sdpa and eager is the headline reference)",
        **other,
    }
    rec.extra["reference_notebook"] = {
        "method": "Seq2SeqTrainer(group_by_length) on SpeechEncoderDecoderModel, "
        "all trainable, fp32 (as the notebook does it)",
        "available": True,
        **notebook,
    }
    rec.ratios = {
        "throughput": ratio(mine["audio_sec_per_sec"], theirs["audio_sec_per_sec"], True),
        "peak_memory": ratio(mine[memory], theirs[memory], False),
        "throughput_first_epoch": ratio(
            mine["first_epoch"]["audio_sec_per_sec"], theirs["audio_sec_per_sec"], True
        ),
        "throughput_no_front_end_cache": ratio(
            plain["audio_sec_per_sec"], theirs["audio_sec_per_sec"], True
        ),
        "throughput_vs_notebook": ratio(
            mine["audio_sec_per_sec"], notebook["audio_sec_per_sec"], True
        ),
        "peak_memory_vs_notebook": ratio(mine[memory], notebook[memory], False),
    }
    rec.headline = "throughput"
    rec.target = {
        "throughput_ratio_at_least": TARGET_SAME_PRECISION,
        "compared_with": "same-work bf16 reference",
        "met": (rec.ratios["throughput"] or 0) >= TARGET_SAME_PRECISION,
    }
    rec.notes = [
        "throughput: ours in epochs 2+ (the frozen conv stack's outputs served from the "
        "front-end cache filled in epoch 1) vs the reference on the same updates, which "
        "recomputes them every epoch; throughput_first_epoch and "
        "throughput_no_front_end_cache are the ratios without that cache's help",
        f"peak memory = {memory} during training; the references also hold the whole "
        "preprocessed train split in memory (a datasets.Dataset), ours decodes clips on the fly",
        *NOTES,
    ]
    return rec
