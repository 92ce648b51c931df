"""Step 2: SAMU-XLS-R semantic distillation of the speech encoder into a text teacher's space.

``run_distill(cfg)``: embed every distinct text ONCE with the frozen teacher (through the
on-disk :class:`EmbeddingCache`), free the teacher, then train a :class:`SamuModel` (encoder →
one-query attention pooling → projection) on cosine distance in the shared loop, with speed
perturbation, separate learning rates for head and encoder, and dev recall@1. Exports
``<out_dir>/final`` (``SamuModel.save``; its ``encoder/`` is what step 3 loads) with a
``metrics.json`` of the final dev numbers.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from samu_st.data.dataset import SpeechDataset
from samu_st.errors import ConfigError
from samu_st.models.encoder import EncoderConfig
from samu_st.models.samu import SamuModel
from samu_st.models.teacher import (
    POOLINGS,
    EmbeddingCache,
    Pooling,
    TextTeacher,
    default_teacher_path,
    embed_cached,
    native_pooling,
)
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
from samu_st.training import TrainConfig, train
from samu_st.training.loop import TrainResult
from samu_st.training.tracking import JSONL, read_jsonl

log = logging.getLogger(__name__)

TextField = Literal["source_text", "target_text"]
METRICS_FILE = "metrics.json"
CACHE_FILE = "teacher_embeddings.sqlite"


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen text teacher and the text it embeds."""

    path: str | None = None  # local BERT-family folder (LaBSE); None: the packaged all-MiniLM-L6-v2
    # cls: first token (the paper, LaBSE); mean: masked mean (all-MiniLM-L6-v2 was trained
    # with it); pooler; native: what the folder's 1_Pooling/config.json says, else cls.
    pooling: Literal["cls", "pooler", "mean", "native"] = "native"
    # source_text: the transcript (the paper; LaBSE is multilingual); target_text: the English
    # translation (mini-CoVoST with the English-only MiniLM, DESIGN.md §2).
    text_field: TextField = "source_text"
    max_length: int = 256  # teacher tokens per text (longer texts are truncated)
    batch_size: int = 64  # texts per teacher forward pass
    cache: str | None = None  # SQLite embedding cache; None: <out_dir>/teacher_embeddings.sqlite
    # Subtract the mean training embedding from every teacher vector (train and dev): the
    # cosine loss then ignores what all texts share. Not in the paper (our option): a narrow
    # domain such as mini-CoVoST's numbers has embeddings within cosine 0.95 of their nearest
    # neighbour, and the raw loss is 0.17 for predicting the mean alone.
    center: bool = False


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

    embeddings: torch.Tensor  # (U, D) float32
    rows: torch.Tensor  # (N,) long: the row of utterance i's text
    texts: list[str]  # the U distinct texts, in row order


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


def resolve_pooling(cfg: TeacherConfig, folder: Path) -> Pooling:
    """The teacher pooling: ``native`` reads the folder's sentence-transformers config."""
    if cfg.pooling == "native":
        return native_pooling(folder) or "cls"
    assert cfg.pooling in POOLINGS
    return cfg.pooling


def teacher_tables(
    cfg: TeacherConfig, cache_path: Path, *text_lists: Sequence[str]
) -> list[TeacherTable]:
    """Embed the distinct texts of each list ONCE (through the cache), then free the teacher.

    The teacher is loaded only here: training only indexes the returned tables.
    """
    folder = Path(cfg.path) if cfg.path is not None else default_teacher_path()
    pooling = resolve_pooling(cfg, folder)
    teacher = TextTeacher.from_folder(folder, pooling, cfg.max_length)
    distinct = [list(dict.fromkeys(texts)) for texts in text_lists]
    with EmbeddingCache(cache_path) as cache:
        before = cache.count(teacher.cache_key)
        tables = [embed_cached(teacher, unique, cache, cfg.batch_size) for unique in distinct]
        added = cache.count(teacher.cache_key) - before
    log.info(
        "teacher %s (%s pooling, dim %d): %s distinct texts, %d newly embedded, cache %s",
        folder, pooling, teacher.dim, "+".join(str(len(d)) for d in distinct), added, cache_path,
    )  # fmt: skip
    del teacher
    gc.collect()
    result = []
    for texts, unique, table in zip(text_lists, distinct, tables, strict=True):
        index = {t: i for i, t in enumerate(unique)}
        rows = torch.tensor([index[t] for t in texts], dtype=torch.long)
        result.append(TeacherTable(table, rows, unique))
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


def _export(model: DistillModel, folder: Path, result: TrainResult, cfg: DistillConfig) -> Path:
    """Save the SAMU model and ``metrics.json`` (final dev numbers, every validation)."""
    model.samu.cpu().save(folder)
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
    metrics["validations"] = validations
    text = json.dumps(metrics, indent=2) + "\n"
    (folder / METRICS_FILE).write_text(text, encoding="utf-8")
    return folder


def run_distill(cfg: DistillConfig, resume: bool = False) -> Path:
    """Train step 2 as ``cfg`` says; returns ``<out_dir>/final`` (a SAMU model folder)."""
    dataset, sampler, train_cfg = train_data(cfg.data, cfg.train)
    dev_set = dev_dataset(cfg.dev)
    field_ = cfg.teacher.text_field
    texts = [utterance_texts(dataset, field_)]
    if dev_set is not None:
        texts.append(utterance_texts(dev_set, field_))
    cache = Path(cfg.teacher.cache) if cfg.teacher.cache else Path(cfg.out_dir) / CACHE_FILE
    tables = on_main(lambda: teacher_tables(cfg.teacher, cache, *texts))  # one writer
    tables = tables or teacher_tables(cfg.teacher, cache, *texts)  # others: all cached now
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
    model = DistillModel(samu, len(vocab) if vocab else 0)
    val_candidates = tables[1].embeddings if dev_set is not None else None
    blank = vocab[PAD_TOKEN] if vocab else 0
    task = DistillTask(cfg.head_lr, cfg.aux_ctc_weight, blank, val_candidates)
    result = train(task, model, dataset, collate, sampler, train_cfg, cfg.out_dir, resume,
                   val_loader, run_config=cfg)  # fmt: skip
    folder = final_dir(cfg.out_dir)
    on_main(lambda: _export(model, folder, result, cfg))
    return folder
