"""Step 3: adapter-based multitask speech translation training (paper §2), and its ``-F``
variant (full encoder fine-tuning).

The translator of :mod:`samu_st.models.translator` — the step-1/2 encoder (or a preset) with
bottleneck adapters, a length adaptor, and an MBART decoder trained with LNA-D — learns all
source languages in one stream (optionally with temperature-based language sampling, see
:class:`~samu_st.steps.data.DataConfig`) by teacher forcing with a label-smoothed
cross-entropy. The decoder prefix of ``model.decoder.prefix`` (``[</s>, <src>]``,
``[</s>, en_XX]`` or ``[</s>, <src>, en_XX]``) conditions it on the task; the exported folder
records it (``decoder_prefix.json``) and is decoded with it. Output: ``out_dir/final``, a
:func:`~samu_st.models.translator.save_translator` folder (plus ``train_hours.json``, the
training hours per language, for the evaluation plots).

The target tokenizer is the one of the decoder's folder (``model.tokenizer`` or
``model.decoder.pretrained``, e.g. the ``samu-st pretrain-text`` output or a copy of
mbart-large-50-many-to-one-mmt); with a preset decoder a small one is trained on the training
targets and kept in ``out_dir/tokenizer`` (reused on ``--resume``).

Frozen parts cost no backward work: their parameters do not require grad, and the frozen conv
feature encoder's input is not made to require grad (``_requires_grad`` off, set by
:func:`~samu_st.models.translator.set_trainable`), so autograd records nothing before the
first adapter. The model is built after seeding torch with ``train.seed``, so a resumed run
rebuilds the same frozen (preset) weights.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from samu_st.atomic import write_text_atomic
from samu_st.data.dataset import SpeechDataset
from samu_st.errors import SamuError
from samu_st.models.front_end_cache import describe, make_front_end_cache
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer
from samu_st.models.translator import TranslatorConfig, build_translator, save_translator
from samu_st.steps.data import DataConfig, manifest_files
from samu_st.steps.speech_data import (
    dev_dataset,
    eval_loader,
    final_dir,
    made_once_on_main,
    on_main,
    seed_model_init,
    train_data,
)
from samu_st.steps.tasks_st import CharEncoder, STCollator, STModel, STTask, even_subset
from samu_st.text import build_char_vocab, get_normalizer, save_vocab
from samu_st.training import (
    CheckpointManager,
    TrainConfig,
    TrainResult,
    train,
)
from samu_st.training.loop import CHECKPOINTS

log = logging.getLogger(__name__)

TOKENIZER = "tokenizer"
TRAIN_HOURS = "train_hours.json"  # written into the exported folder, read by `evaluate`
CTC_VOCAB = "ctc_vocab.json"


@dataclass(frozen=True)
class TrainSTConfig:
    """``samu-st train-st``: the ``train_st:`` section of a config file."""

    out_dir: str  # run folder: checkpoints, logs, config.yaml, final/
    data: DataConfig  # training manifests and batching (paper: 600 s of speech per batch)
    # Dev manifests for validation (loss + greedy BLEU); None = no validation.
    dev: DataConfig | None = None
    # Encoder (pretrained step-1/2 folder or preset; mode adapters = -A, full = -F), length
    # adaptor, decoder (pretrained MBART folder or preset; trainable: lna = LNA-D).
    model: TranslatorConfig = field(default_factory=TranslatorConfig)
    # Loop, optimiser (paper: Adam, peak LR 5e-4) and tri-stage schedule.
    train: TrainConfig = field(default_factory=TrainConfig)
    # Label smoothing epsilon. Not given in the paper; 0.1 is our choice (fairseq's S2T recipes).
    label_smoothing: float = 0.1
    # Vocabulary of the target tokenizer trained when the decoder is a preset (no folder).
    tokenizer_vocab_size: int = 1000
    # Weight w of an auxiliary CTC loss on the source transcript, (1 - w)·CE + w·CTC; 0 = off
    # (the paper has none: our deviation, for encoders trained from scratch, DESIGN.md §6).
    aux_ctc_weight: float = 0.0
    # Text normaliser of the CTC source labels (samu_st.text.NORMALIZERS).
    ctc_normalizer: str = "generic"
    # Dev utterances (evenly spread) decoded greedily for the validation BLEU; 0 = no BLEU.
    val_bleu_utterances: int = 100
    # Generation cap for the validation BLEU.
    val_max_new_tokens: int = 64


def target_tokenizer(
    cfg: TrainSTConfig, texts: list[str], out_dir: Path, resume: bool
) -> TargetTokenizer:
    """The decoder folder's tokenizer, or one trained on ``texts`` (saved in out_dir)."""
    folder = cfg.model.tokenizer or cfg.model.decoder.pretrained
    if folder is not None:
        return TargetTokenizer.load(folder)
    saved = out_dir / TOKENIZER

    # One tokenizer for every rank, the checkpoints and the export; a resumed run keeps it.
    def train(tmp: Path) -> None:
        train_target_tokenizer(texts, cfg.tokenizer_vocab_size).save(tmp)

    made = made_once_on_main(saved, train, reuse=resume, point="train_st.tokenizer")
    return TargetTokenizer.load(made)


def build_st_model(cfg: TrainSTConfig, tokenizer: TargetTokenizer, ctc_classes: int = 0) -> STModel:
    """The translator of ``cfg.model`` (+ CTC head), built after seeding torch."""
    seed_model_init(cfg.train)
    translator = build_translator(cfg.model, tokenizer)
    return STModel(translator, ctc_classes, make_front_end_cache(cfg.data.front_end_cache_mb))


def char_encoder(cfg: TrainSTConfig, dataset: SpeechDataset) -> CharEncoder:
    """The CTC character vocabulary of the normalised training source transcripts."""
    normalizer = get_normalizer(cfg.ctc_normalizer)
    vocab = build_char_vocab(normalizer(u.source_text) for u in dataset.utterances)
    return CharEncoder(vocab, normalizer)


def train_hours(dataset: SpeechDataset) -> dict[str, float]:
    """Hours of training speech per language."""
    seconds: dict[str, float] = defaultdict(float)
    for utt in dataset.utterances:
        seconds[utt.language] += utt.duration
    return {lang: s / 3600.0 for lang, s in sorted(seconds.items())}


def _dev_loader(
    cfg: TrainSTConfig, collator: STCollator
) -> tuple[DataLoader[Any] | None, list[int]]:
    dataset = dev_dataset(cfg.dev)
    if cfg.dev is None or dataset is None:
        return None, []
    loader = eval_loader(cfg.dev, dataset, collator)
    return loader, even_subset(len(dataset), cfg.val_bleu_utterances)


def _count(model: torch.nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def export(
    model: STModel,
    tokenizer: TargetTokenizer,
    cfg: TrainSTConfig,
    hours: dict[str, float],
    folder: Path,
) -> Path:
    """Save the translator (the CTC head is dropped) and its training hours per language."""
    path = save_translator(folder, model.translator, tokenizer, cfg.model)
    meta = {"train_hours": hours, "manifests": [str(p) for p in manifest_files(cfg.data)]}
    text = json.dumps(meta, indent=2) + "\n"
    write_text_atomic(path / TRAIN_HOURS, text, point="train_st.train_hours")
    return path


def run_train_st_result(cfg: TrainSTConfig, resume: bool = False) -> tuple[Path, TrainResult]:
    """:func:`run_train_st`, also returning the loop's :class:`TrainResult`."""
    out = Path(cfg.out_dir)
    found = CheckpointManager(out / CHECKPOINTS, 1).checkpoints()
    if found and not resume:  # checked before anything (the tokenizer) is written
        raise SamuError(
            f"{out}: already holds checkpoints (newest {found[-1].name}); resume that run "
            "(--resume) or choose another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    dataset, sampler, train_cfg = train_data(cfg.data, cfg.train)
    tokenizer = target_tokenizer(cfg, [u.target_text for u in dataset.utterances], out, resume)
    chars = char_encoder(cfg, dataset) if cfg.aux_ctc_weight > 0 else None
    if chars is not None:
        on_main(lambda: save_vocab(chars.vocab, out / CTC_VOCAB))
    model = build_st_model(cfg, tokenizer, len(chars) if chars is not None else 0)
    positions = model.translator.decoder.config.max_position_embeddings
    collator = STCollator(tokenizer, int(positions), chars, cfg.model.decoder.prefix)
    val_loader, bleu_indices = _dev_loader(cfg, collator)
    task = STTask(
        tokenizer,
        cfg.label_smoothing,
        cfg.aux_ctc_weight,
        chars.blank if chars is not None else 0,
        bleu_indices,
        cfg.val_max_new_tokens,
    )
    translator = model.translator
    log.info(
        "translator: %d parameters, %d trainable (encoder mode %s, decoder %s, prefix %s)",
        _count(translator, False),
        _count(translator, True),
        cfg.model.encoder.mode,
        cfg.model.decoder.trainable,
        cfg.model.decoder.prefix,
    )
    result = train(
        task, model, dataset, collator, sampler, train_cfg, out, resume, val_loader, run_config=cfg
    )
    log.info("%s", describe(model.front_end_cache))
    final = final_dir(out)
    on_main(lambda: export(model, tokenizer, cfg, train_hours(dataset), final))
    log.info("translator saved to %s", final)
    return final, result


def run_train_st(cfg: TrainSTConfig, resume: bool = False) -> Path:
    """Train step 3 as ``cfg`` says; returns the exported translator folder (out_dir/final)."""
    return run_train_st_result(cfg, resume)[0]
