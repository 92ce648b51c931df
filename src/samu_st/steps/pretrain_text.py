"""Text denoising pretraining of a small MBART (``samu-st pretrain-text CONFIG``).

The mini setting has no MBART-50 to start step 3 from, so this step makes one the same way,
smaller: an ``MBartForConditionalGeneration`` of a :func:`~samu_st.models.decoder.mbart_config`
preset trained with mBART's text infilling (:mod:`samu_st.steps.tasks_text`) on the texts of
the training manifests (the English targets; optionally the source transcripts too), with a
tokenizer trained on the same texts (:func:`~samu_st.models.tokenizer.train_target_tokenizer`)
or an existing one. ``<out_dir>/final`` holds the model (``save_pretrained``) and its tokenizer:
``DecoderConfig(pretrained=...)`` / ``load_mbart_decoder`` and ``TargetTokenizer.load`` read it,
and step 3's translator uses the tokenizer of its decoder folder by default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import DataLoader
from transformers import MBartForConditionalGeneration

from samu_st.atomic import atomic_folder
from samu_st.data.manifest import LANGUAGE_CODE_RE, read_manifest
from samu_st.data.sampler import DurationBatchSampler
from samu_st.errors import ConfigError, DataError
from samu_st.models.decoder import DecoderPreset, mbart_config
from samu_st.models.loading import load_pretrained_checked
from samu_st.models.tokenizer import TARGET_LANGUAGE, TargetTokenizer, train_target_tokenizer
from samu_st.steps.data import DataConfig, manifest_files
from samu_st.steps.speech_data import final_dir, made_once_on_main, on_main, seed_model_init
from samu_st.steps.tasks_text import DenoisingCollator, DenoisingTask, NoiseConfig, TextDataset
from samu_st.training import TrainConfig, process_rank_and_count, train

log = logging.getLogger(__name__)

TextField = Literal["source_text", "target_text"]
TOKENIZER_DIR = "tokenizer"


@dataclass(frozen=True)
class PretrainTextConfig:
    """Text denoising pretraining of the MBART whose decoder step 3 fine-tunes with LNA-D."""

    out_dir: str  # run folder: checkpoints, logs, tokenizer/; the model goes to out_dir/final
    data: DataConfig  # manifests whose texts are used (only manifests, split, languages, seed)
    # Plain text corpora besides the manifests (denoise only): UTF-8 files of
    # ``language<TAB>text`` lines (a folder: its *.tsv), e.g. the mini-MBART-50 corpus
    # of samu_st.data.release_corpus.
    text_files: tuple[str, ...] = ()
    dev: DataConfig | None = None  # texts for validation (dev NLL, token accuracy)
    # target_text: the English translations (what the decoder writes in step 3); add
    # source_text to pretrain on the transcripts too (with their language token).
    text_fields: tuple[TextField, ...] = ("target_text",)
    # denoise: text infilling (MBART pretraining); translate: source_text -> target_text
    # pairs without noise (the cascade baseline's text MT, usually with `init`).
    objective: Literal["denoise", "translate"] = "denoise"
    init: str | None = None  # MBART folder (model + tokenizer) to start from; None: `preset`
    # Tokenizer folder; None: init's tokenizer, else one trained on the texts (and, for
    # translate, the source texts).
    tokenizer: str | None = None
    vocab_size: int = 1000  # size of a trained tokenizer (smaller on a small corpus)
    preset: DecoderPreset = "mini"  # MBART architecture (models.decoder presets)
    dropout: float | None = None  # None: the preset's
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # text infilling
    max_tokens: int = 2048  # padded tokens per batch: len(batch) * longest text
    max_batch_size: int = 0  # texts per batch; 0: no limit
    label_smoothing: float = 0.0  # of the reconstruction cross-entropy
    train: TrainConfig = field(default_factory=TrainConfig)  # loop, optimiser, schedule

    def __post_init__(self) -> None:
        if not self.text_fields:
            raise ConfigError("pretrain_text.text_fields: name at least one text field")
        if self.max_tokens < 1 or self.max_batch_size < 0 or self.vocab_size < 1:
            raise ConfigError("pretrain_text: max_tokens/vocab_size >= 1, max_batch_size >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("pretrain_text.label_smoothing: must be in [0, 1)")


Examples = tuple[list[str], list[str], list[str]]  # sources, targets, languages


def read_examples(cfg: PretrainTextConfig, data: DataConfig, text_files: bool = False) -> Examples:
    """Distinct (source, target, language) triples of ``data``'s manifests (and, with
    ``text_files``, of ``cfg.text_files`` first, for denoising), first seen first.

    denoise: each text of ``text_fields`` is its own target; a target text is English, a
    source text is in its utterance's language. translate: (transcript, translation, source
    language). Empty texts (unlabeled clips) are skipped.
    """
    triples: dict[tuple[str, str, str], None] = {}
    if text_files and cfg.objective == "denoise":
        for text, lang in read_text_files(cfg.text_files):
            triples[(text, text, lang)] = None
    for path in manifest_files(data) if data.manifests or not triples else []:
        for utt in read_manifest(path):
            if data.languages and utt.language not in data.languages:
                continue
            source, target = " ".join(utt.source_text.split()), " ".join(utt.target_text.split())
            if cfg.objective == "translate":
                if source and target:
                    triples[(source, target, utt.language)] = None
                continue
            for name in cfg.text_fields:
                text = target if name == "target_text" else source
                lang = TARGET_LANGUAGE if name == "target_text" else utt.language
                if text:
                    triples[(text, text, lang)] = None
    if not triples:
        raise ConfigError(f"pretrain_text: no text in {list(data.manifests)} ({cfg.objective})")
    return [s for s, _, _ in triples], [t for _, t, _ in triples], [lang for *_, lang in triples]


def read_text_files(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
    """(text, language) of each ``language<TAB>text`` line of each file (a folder: its
    ``*.tsv``); a malformed line is a :class:`DataError` naming the file and line."""
    files = [
        p for n in paths for p in (sorted(Path(n).glob("*.tsv")) if Path(n).is_dir() else [Path(n)])
    ]
    for name in files:
        if not name.is_file():
            raise DataError(name, "text file not found")
        with open(name, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip(" \t\r\n"):
                    continue
                lang, sep, text = line.rstrip("\r\n").partition("\t")
                if not sep or not LANGUAGE_CODE_RE.match(lang) or not text.strip():
                    raise DataError(name, "expected 'language<TAB>text'", number)
                yield " ".join(text.split()), lang


def load_or_train_tokenizer(cfg: PretrainTextConfig, examples: Examples) -> TargetTokenizer:
    """``cfg.tokenizer``, else ``cfg.init``'s, else the one trained earlier in this run, else
    a new one trained on the examples' texts (and saved in ``<out_dir>/tokenizer``)."""
    if cfg.tokenizer is not None or cfg.init is not None:
        return TargetTokenizer.load(cfg.tokenizer or str(cfg.init))
    folder = Path(cfg.out_dir) / TOKENIZER_DIR

    def train(tmp: Path) -> None:
        texts = list(dict.fromkeys([*examples[1], *examples[0]]))
        tokenizer = train_target_tokenizer(texts, cfg.vocab_size)
        tokenizer.save(tmp)
        log.info(
            "trained a %d-token tokenizer on %d texts -> %s", len(tokenizer), len(texts), folder
        )

    # a resumed run keeps its vocabulary; every process loads the files the main one wrote
    made = made_once_on_main(folder, train, point="pretrain_text.tokenizer")
    return TargetTokenizer.load(made)


def build_model(cfg: PretrainTextConfig, vocab_size: int) -> MBartForConditionalGeneration:
    """A fresh ``cfg.preset`` MBART, or ``cfg.init`` loaded offline (resized if needed)."""
    extra: dict[str, Any] = {} if cfg.dropout is None else {"dropout": cfg.dropout}
    if cfg.init is None:
        return MBartForConditionalGeneration(mbart_config(cfg.preset, vocab_size, **extra))
    model, _ = load_pretrained_checked(
        MBartForConditionalGeneration, cfg.init, "MBART model", **extra
    )
    if model.config.vocab_size < vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    return model


def text_sampler(
    cfg: PretrainTextConfig, dataset: TextDataset, *, shuffle: bool = True
) -> DurationBatchSampler:
    """Token-budget batches of this process's share (the duration sampler over token counts)."""
    rank, world = process_rank_and_count(cfg.train) if shuffle else (0, 1)
    return DurationBatchSampler(
        dataset.token_counts,
        float(cfg.max_tokens),
        max_batch_size=cfg.max_batch_size or None,
        shuffle=shuffle,
        seed=cfg.data.seed,
        rank=rank,
        world_size=world,
        drop_last=shuffle,
    )


def run_pretrain_text(cfg: PretrainTextConfig, resume: bool = False) -> Path:
    """Train the text step as ``cfg`` says; returns ``<out_dir>/final`` (MBART + tokenizer)."""
    examples = read_examples(cfg, cfg.data, text_files=True)
    tokenizer = load_or_train_tokenizer(cfg, examples)
    seed_model_init(cfg.train)
    model = build_model(cfg, len(tokenizer))
    positions = int(model.config.max_position_embeddings)
    noise = cfg.noise if cfg.objective == "denoise" else None
    dataset = TextDataset(*examples, tokenizer)
    val_loader = None
    if cfg.dev is not None:
        dev = TextDataset(*read_examples(cfg, cfg.dev), tokenizer)
        dev_collate = DenoisingCollator(tokenizer, noise, positions, seed=cfg.data.seed)
        sampler = text_sampler(cfg, dev, shuffle=False)
        val_loader = DataLoader(dev, batch_sampler=sampler, collate_fn=dev_collate)
    log.info("MBART %s: %d parameters, %d texts", cfg.preset, model.num_parameters(), len(dataset))
    task = DenoisingTask(cfg.label_smoothing)
    collate = DenoisingCollator(tokenizer, noise, positions)
    train(task, model, dataset, collate, text_sampler(cfg, dataset), cfg.train, cfg.out_dir,
          resume, val_loader, run_config=cfg)  # fmt: skip
    folder = final_dir(cfg.out_dir)

    def export() -> Path:
        with atomic_folder(folder, point="pretrain_text.final") as tmp:
            model.cpu().save_pretrained(tmp)
            tokenizer.save(tmp)
        return folder

    on_main(export)
    return folder
