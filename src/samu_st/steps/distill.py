"""Step 2: SAMU-XLS-R semantic distillation of the speech encoder into a text teacher's space.

``run_distill(cfg)``: embed every distinct text ONCE with the frozen teacher, every process its
share, into one memory-mapped table on disk (:mod:`samu_st.models.teacher_table`), free the
teacher, then train a :class:`SamuModel` (encoder →
one-query attention pooling → projection) on cosine distance in the shared loop, with speed
perturbation, separate learning rates for head and encoder, and dev recall@1. Exports
``<out_dir>/final`` (``SamuModel.save``; its ``encoder/`` is what step 3 loads) with a
``metrics.json`` of the final dev numbers and the resolved teacher (key ``teacher``).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from samu_st.atomic import atomic_folder
from samu_st.data.dataset import SpeechDataset
from samu_st.errors import ConfigError, ModelLoadError
from samu_st.models.encoder import EncoderConfig
from samu_st.models.front_end_cache import describe, make_front_end_cache
from samu_st.models.packaged_teachers import packaged_teacher, resolve_teacher_path
from samu_st.models.samu import SamuModel
from samu_st.models.teacher import TeacherPlan, TeacherPooling, TextTeacher, resolve_device
from samu_st.models.teacher_table import ONE_PROCESS, ShardJob, build_table
from samu_st.steps.data import DataConfig
from samu_st.steps.speech_data import (
    dev_dataset,
    eval_loader,
    final_dir,
    on_main,
    seed_model_init,
    train_data,
)
from samu_st.steps.tasks_distill import DistillCollator, DistillModel, DistillTask
from samu_st.text import PAD_TOKEN, UNK_TOKEN, WORD_DELIMITER, build_char_vocab, get_normalizer
from samu_st.training import TrainConfig, process_rank_and_count, train
from samu_st.training.loop import TrainResult
from samu_st.training.tracking import JSONL, read_jsonl

log = logging.getLogger(__name__)

TextField = Literal["source_text", "target_text"]
METRICS_FILE = "metrics.json"
CACHE_FILE = "teacher_embeddings.sqlite"


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen text teacher and the text it embeds."""

    # A local BERT-family folder (LaBSE), or a teacher shipped in a PyPI package:
    # packaged:all-MiniLM-L6-v2 (English only; also what None means) or
    # packaged:multilingual-e5-small (multilingual, as LaBSE; set text_prefix "query: ").
    path: str | None = None
    # native: the vector the folder's sentence-transformers modules (modules.json) define, e.g.
    # LaBSE's [CLS] → Dense(tanh) → L2-normalise, all-MiniLM-L6-v2's mean → normalise; an
    # error for a folder without modules.json. cls / mean / pooler: the raw first token, masked
    # mean or BERT pooler output of the last hidden layer, no Dense, no normalisation.
    pooling: TeacherPooling = "native"
    # source_text: the transcript (the paper; LaBSE is multilingual); target_text: the English
    # translation (mini-CoVoST with the English-only MiniLM, DESIGN.md §2).
    text_field: TextField = "source_text"
    max_length: int = 256  # teacher tokens per text (longer texts are truncated)
    # Prepended to every text before the teacher embeds it (part of the embedding cache key):
    # multilingual-e5 models are trained with "query: " for symmetric similarity.
    text_prefix: str = ""
    batch_size: int = 64  # texts per teacher forward pass
    # SQLite cache of single vectors (reuse when the text list changes); None:
    # <out_dir>/teacher_embeddings.sqlite. The memory-mapped tables go beside it, in
    # <cache without suffix>.tables/ (one .npy per teacher + text list: a rerun maps it at once).
    cache: str | None = None
    # Where each process runs the teacher: auto = its accelerator (cuda:LOCAL_RANK) when there
    # is one, else the CPU; or cpu, cuda, cuda:N, mps.
    device: str = "auto"
    # Seconds a process waits for the other processes' shares of the teacher table (each embeds
    # 1/world of the texts) before it fails with an error naming the missing file.
    wait_timeout: float = 7200.0
    # Subtract the mean training embedding from every teacher vector (train and dev): the
    # cosine loss then ignores what all texts share. Not in the paper (our option): a narrow
    # domain such as mini-CoVoST's numbers has embeddings within cosine 0.95 of their nearest
    # neighbour, and the raw loss is 0.17 for predicting the mean alone.
    center: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ConfigError(
                f"distill.teacher.device: auto, cpu, cuda, cuda:N or mps, got {self.device!r}"
            )
        if self.wait_timeout <= 0:
            raise ConfigError("distill.teacher.wait_timeout: must be > 0 seconds")
        try:
            packaged_teacher(self.path)
        except ModelLoadError as err:
            raise ConfigError(f"distill.teacher.path: {err}") from None


@dataclass(frozen=True)
class DistillConfig:
    """Step 2 (``samu-st distill CONFIG``): semantic distillation."""

    out_dir: str  # run folder: checkpoints, logs, teacher cache; the model goes to out_dir/final
    data: DataConfig  # training manifests; the paper perturbs speed: speed_factors 0.9 1.0 1.1
    dev: DataConfig | None = None  # dev manifests (split: dev): cosine loss and R@1 at val_every
    # The speech encoder: the step-1 folder (pretrained: <pretrain out_dir>/final) or a preset;
    # mode full with the conv front end frozen (train_feature_encoder: false) as in the paper.
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)  # frozen text teacher
    head_lr: float = 5e-4  # peak LR of pooling + projection; the encoder uses train.optim.lr
    # Weight of an auxiliary CTC loss on the normalised source transcript (our deviation,
    # DESIGN.md §6); 0 = pure SAMU as in the paper.
    aux_ctc_weight: float = 0.0
    aux_ctc_normalizer: str = "generic"  # samu_st.text normaliser of the CTC transcripts
    train: TrainConfig = field(default_factory=TrainConfig)  # loop, optimiser (encoder LR)

    def __post_init__(self) -> None:
        if self.head_lr <= 0:
            raise ConfigError(f"distill.head_lr: must be > 0, got {self.head_lr}")
        if self.aux_ctc_weight < 0:
            raise ConfigError("distill.aux_ctc_weight: must be >= 0")
        if self.encoder.mode == "adapters":
            raise ConfigError("distill.encoder.mode: full or frozen (adapters belong to step 3)")
        get_normalizer(self.aux_ctc_normalizer)  # KeyError naming the valid ones


@dataclass(frozen=True)
class TeacherTable:
    """Teacher embeddings of the distinct texts and each utterance's row in the table."""

    embeddings: torch.Tensor  # (U, D) float32 (the training table: a memory-mapped view)
    rows: torch.Tensor  # (N,) long: the row of utterance i's text
    texts: list[str]  # the U distinct texts, in row order
    teacher: dict[str, Any] = field(default_factory=dict)  # TextTeacher.describe() of the run
    table_file: Path | None = None  # the .npy table the embeddings map (None: in RAM)


def utterance_texts(dataset: SpeechDataset, text_field: TextField) -> list[str]:
    """The teacher text of every utterance; an empty one is an error naming the utterance."""
    texts = [getattr(u, text_field).strip() for u in dataset.utterances]
    empty = [u.id for u, t in zip(dataset.utterances, texts, strict=True) if not t]
    if empty:
        raise ConfigError(
            f"distill.teacher.text_field: {len(empty)} utterance(s) have an empty "
            f"{text_field} (e.g. {empty[0]}); use labeled manifests or the other text field"
        )
    return texts


def teacher_tables(
    cfg: TeacherConfig, cache_path: Path, *text_lists: Sequence[str], job: ShardJob = ONE_PROCESS
) -> list[TeacherTable]:
    """One table per text list (its distinct texts, in first-seen order), all rows of one
    memory-mapped file that the processes of ``job`` embed together (see
    :mod:`samu_st.models.teacher_table`); the teacher is loaded only where a text is new.

    The first (training) list's table is a view of the file, never a private copy; the others
    (dev) are small copies of their rows."""
    packaged = packaged_teacher(cfg.path)
    if packaged is not None and packaged.text_prefix != cfg.text_prefix:
        log.warning("teacher %s is meant for text_prefix %r, the config sets %r", packaged.name,
                    packaged.text_prefix, cfg.text_prefix)  # fmt: skip
    folder = resolve_teacher_path(cfg.path)
    plan = TeacherPlan.of(folder, cfg.pooling, cfg.max_length, cfg.text_prefix)
    device = resolve_device(cfg.device)

    def load() -> TextTeacher:
        return TextTeacher.from_folder(
            folder, cfg.pooling, cfg.max_length, device, text_prefix=cfg.text_prefix
        )

    distinct = [list(dict.fromkeys(texts)) for texts in text_lists]
    union = list(dict.fromkeys(t for texts in distinct for t in texts))
    tables_dir = cache_path.with_suffix(".tables")
    built = build_table(plan, load, union, tables_dir, cache_path, cfg.batch_size, job)
    log.info(
        "teacher %s (%s, dim %d, on %s): %s distinct texts, table %s; process %d of %d "
        "embedded %d of them", folder, plan.describe()["summary"], plan.dim, device,
        "+".join(str(len(d)) for d in distinct), built.path, job.rank, job.world, built.embedded,
    )  # fmt: skip
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the teacher is gone; give its memory back to training
    index = {t: i for i, t in enumerate(union)}
    result = []
    for position, (texts, unique) in enumerate(zip(text_lists, distinct, strict=True)):
        if position == 0:  # the first list's texts are the table's first rows
            with warnings.catch_warnings():  # read-only memory: nothing writes a teacher table
                warnings.simplefilter("ignore", UserWarning)
                embeddings = torch.from_numpy(built.vectors[: len(unique)])
        else:
            embeddings = torch.from_numpy(np.array(built.vectors[[index[t] for t in unique]]))
        local = {t: i for i, t in enumerate(unique)}
        rows = torch.tensor([local[t] for t in texts], dtype=torch.long)
        result.append(TeacherTable(embeddings, rows, unique, plan.describe(), built.path))
    return result


def center_tables(tables: Sequence[TeacherTable]) -> list[TeacherTable]:
    """All tables minus the utterance-weighted mean embedding of the first (training) one."""
    first = tables[0]
    mean = first.embeddings[first.rows].mean(dim=0, keepdim=True)
    return [replace(t, embeddings=t.embeddings - mean) for t in tables]


def ctc_labels(
    dataset: SpeechDataset, normalizer_name: str, vocab: dict[str, int] | None = None
) -> tuple[list[list[int]], dict[str, int]]:
    """Character labels of the normalised source transcripts (and the vocabulary, built from
    them when not given; unknown characters map to ``[UNK]``)."""
    normalize = get_normalizer(normalizer_name)
    texts = [normalize(u.source_text) for u in dataset.utterances]
    if vocab is None:
        vocab = build_char_vocab(texts)
    unk = vocab[UNK_TOKEN]
    labels = [[vocab.get(WORD_DELIMITER if c == " " else c, unk) for c in t] for t in texts]
    return labels, vocab


def _export(
    model: DistillModel, folder: Path, result: TrainResult, cfg: DistillConfig,
    teacher: dict[str, Any],
) -> Path:  # fmt: skip
    """Save the SAMU model and ``metrics.json`` (final dev numbers, every validation, the
    resolved teacher), atomically."""
    with atomic_folder(folder, point="distill.final") as tmp:
        model.samu.cpu().save(tmp)
        (tmp / METRICS_FILE).write_text(_metrics_json(result, cfg, teacher), encoding="utf-8")
    return folder


def _metrics_json(result: TrainResult, cfg: DistillConfig, teacher: dict[str, Any]) -> str:
    # The run's log, not just this call's result: a resumed run keeps earlier validations.
    log_file = Path(cfg.out_dir) / JSONL
    records = read_jsonl(log_file) if log_file.is_file() else []
    validations = [r for r in records if r.get("kind") == "val"] or result.validations
    losses = [r["loss"] for r in records if r.get("kind") == "train"] or [result.last_loss]
    loss = losses[-1] if math.isfinite(losses[-1]) else None
    metrics: dict[str, Any] = {"steps": result.step, "train_loss": loss}
    if validations:
        metrics.update({k: v for k, v in validations[-1].items() if k not in ("kind", "step")})
    metrics["teacher_text_field"] = cfg.teacher.text_field
    metrics["teacher"] = teacher  # the resolved vector: pooling, dense, normalize, ...
    metrics["validations"] = validations
    return json.dumps(metrics, indent=2) + "\n"


def run_distill(cfg: DistillConfig, resume: bool = False) -> Path:
    """Train step 2 as ``cfg`` says; returns ``<out_dir>/final`` (a SAMU model folder)."""
    dataset, sampler, train_cfg = train_data(cfg.data, cfg.train)
    dev_set = dev_dataset(cfg.dev)
    field_ = cfg.teacher.text_field
    texts = [utterance_texts(dataset, field_)]
    if dev_set is not None:
        texts.append(utterance_texts(dev_set, field_))
    cache = Path(cfg.teacher.cache) if cfg.teacher.cache else Path(cfg.out_dir) / CACHE_FILE
    rank, world = process_rank_and_count(cfg.train)  # each process embeds its share
    job = ShardJob(rank, world, cfg.teacher.wait_timeout)
    tables = teacher_tables(cfg.teacher, cache, *texts, job=job)
    if cfg.teacher.center:
        tables = center_tables(tables)
    labels, vocab = (None, None)
    if cfg.aux_ctc_weight > 0:
        labels, vocab = ctc_labels(dataset, cfg.aux_ctc_normalizer)
    collate = DistillCollator(tables[0].embeddings, tables[0].rows, labels)
    val_loader = None
    if cfg.dev is not None and dev_set is not None:
        dev_labels = ctc_labels(dev_set, cfg.aux_ctc_normalizer, vocab)[0] if vocab else None
        dev_collate = DistillCollator(tables[1].embeddings, tables[1].rows, dev_labels)
        val_loader = eval_loader(cfg.dev, dev_set, dev_collate)
    seed_model_init(cfg.train)
    samu = SamuModel.from_config(cfg.encoder, out_dim=tables[0].embeddings.shape[1])
    front_end = make_front_end_cache(cfg.data.front_end_cache_mb)
    model = DistillModel(samu, len(vocab) if vocab else 0, front_end)
    val_candidates = tables[1].embeddings if dev_set is not None else None
    blank = vocab[PAD_TOKEN] if vocab else 0
    task = DistillTask(cfg.head_lr, cfg.aux_ctc_weight, blank, val_candidates)
    result = train(task, model, dataset, collate, sampler, train_cfg, cfg.out_dir, resume,
                   val_loader, run_config=cfg)  # fmt: skip
    log.info("%s", describe(front_end))
    folder = final_dir(cfg.out_dir)
    on_main(lambda: _export(model, folder, result, cfg, tables[0].teacher))
    return folder
