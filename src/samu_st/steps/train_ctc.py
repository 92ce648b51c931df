"""CTC fine-tuning of a wav2vec2 / XLS-R encoder: the XLSR notebook recipe as a library step.

``run_train_ctc(cfg)`` does what the notebook does, without its defects (see
:mod:`samu_st.steps.tasks_ctc`):

1. import the corpora named in ``sources`` (a Common Voice language folder or a ``datasets``
   folder saved with ``save_to_disk``) into ``out_dir/data/`` manifests, or read manifests;
2. normalise the transcripts (``samu_st.text``: ``irish`` = the notebook's rules, ``generic``),
   build the character vocabulary from the TRAINING text (``|`` between words, ``[UNK]``,
   ``[PAD]`` = CTC blank), write ``out_dir/vocab.json`` for ``Wav2Vec2CTCTokenizer``; several
   languages share one vocabulary (the paper's ctc-xlsr baseline);
3. drop and count the utterances whose labels need more frames than the encoder outputs
   (``out_dir/label_filter.json``);
4. train ``Wav2Vec2ForCTC`` in the one training loop (frozen conv feature encoder unless
   ``encoder.train_feature_encoder``, SpecAugment time masking, layerdrop, optional gradient
   checkpointing, mixed precision on GPU, duration-bucketed batches), with greedy WER on dev;
5. export ``out_dir/final`` (model + processor, loadable by ``Wav2Vec2ForCTC`` /
   ``Wav2Vec2Processor.from_pretrained`` and :func:`samu_st.models.ctc.load_ctc_model`), its
   normaliser in ``final/samu_ctc.json``, the encoder alone in ``final/encoder`` (for
   ``EncoderConfig(pretrained=...)``), and, with ``lm.order``, an n-gram ``final/lm.arpa``;
6. evaluate on test: greedy and (optionally) n-gram LM beam search, ``out_dir/evaluation.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch.utils.data import DataLoader
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

from samu_st.atomic import atomic_folder, write_text_atomic
from samu_st.config import to_dict
from samu_st.data.dataset import SpeechDataset
from samu_st.data.importers import ImportOptions, import_commonvoice, import_hf_disk
from samu_st.data.irish import LANGUAGE as IRISH_LANGUAGE
from samu_st.data.irish import IrishCorpusConfig, prepare_irish
from samu_st.decoding.ctc import CtcLmDecoder, LmDecodingOptions
from samu_st.decoding.ngram import write_arpa
from samu_st.errors import ConfigError
from samu_st.metrics import cer, wer
from samu_st.models.ctc import build_ctc_model, ctc_encoder, save_ctc_model
from samu_st.models.encoder import EncoderConfig, save_encoder
from samu_st.steps.data import DataConfig, build_sampler, load_dataset
from samu_st.steps.speech_data import batched, seed_model_init
from samu_st.steps.tasks_ctc import (
    CtcCollator,
    CtcTask,
    LabelFilterReport,
    encode_labels,
    filter_feasible,
    output_frames,
)
from samu_st.text import (
    NORMALIZERS,
    PAD_TOKEN,
    UNK_TOKEN,
    WORD_DELIMITER,
    build_char_vocab,
    get_normalizer,
    save_vocab,
)
from samu_st.training import TrainConfig, process_rank_and_count, train

log = logging.getLogger(__name__)

CTC_META = "samu_ctc.json"  # in the exported folder: normaliser, languages, LM file
FINAL, ENCODER, LM_FILE = "final", "encoder", "lm.arpa"


@dataclass(frozen=True)
class CtcSource:
    """A corpus imported into manifests under ``out_dir/data/`` before training."""

    # commonvoice: a Common Voice language folder; hf-disk: a save_to_disk folder;
    # irish-synthetic: the synthetic Irish Common Voice folder, made at `path` first if needed
    kind: Literal["commonvoice", "hf-disk", "irish-synthetic"]
    path: str  # the folder
    language: str | None = None  # language code; commonvoice: the folder name when null
    train_from_validated: bool = False  # commonvoice: train on validated.tsv minus dev/test
    text_column: str = "sentence"  # hf-disk: the transcript column
    irish: IrishCorpusConfig = field(default_factory=IrishCorpusConfig)  # irish-synthetic only


@dataclass(frozen=True)
class LmConfig:
    """Word n-gram LM beam decoding of the test set (the LM is estimated from the train text)."""

    order: int = 0  # n-gram order; 0 = greedy decoding only
    options: LmDecodingOptions = field(default_factory=LmDecodingOptions)  # beam search


# The notebook's encoder settings, except SpecAugment: it masks about 40% of the frames
# (mask_time_prob=0.4), which on 1-5 s clips hides whole words; 0.05 (transformers' default,
# about 5% of the frames) keeps them learnable.
NOTEBOOK_ENCODER = EncoderConfig(
    mask_time_prob=0.05,
    layerdrop=0.1,
    attention_dropout=0.1,
    hidden_dropout=0.1,
    feat_proj_dropout=0.0,
)


@dataclass(frozen=True)
class TrainCtcConfig:
    """``samu-st train-ctc``: CTC fine-tuning of a speech encoder on one or more languages."""

    out_dir: str  # run folder: data/, vocab.json, checkpoints, final/, evaluation.json
    data: DataConfig = field(default_factory=DataConfig)  # train data (manifests: see sources)
    sources: tuple[CtcSource, ...] = ()  # imported first; used when data.manifests is empty
    dev: DataConfig | None = None  # null: data's folders with split "dev" (if they have one)
    test: DataConfig | None = None  # null: data's folders with split "test" (if they have one)
    normalizer: str = "generic"  # samu_st.text normaliser: irish (the notebook's) or generic
    # Pretrained folder or preset; masking; dropout. Absent: NOTEBOOK_ENCODER; a mapping starts
    # from EncoderConfig's defaults (the preset's or checkpoint's values).
    encoder: EncoderConfig = NOTEBOOK_ENCODER
    final_dropout: float = 0.0  # dropout before the CTC head
    export_encoder: bool = True  # also save final/encoder (a Wav2Vec2Model folder)
    lm: LmConfig = field(default_factory=LmConfig)  # optional LM decoding of the test set
    train: TrainConfig = field(default_factory=TrainConfig)  # the loop

    def __post_init__(self) -> None:
        if self.normalizer not in NORMALIZERS:
            raise ConfigError(
                f"normalizer: unknown {self.normalizer!r}; choose from {sorted(NORMALIZERS)}"
            )
        if not self.data.manifests and not self.sources:
            raise ConfigError("data.manifests or sources: give the training data")
        if self.lm.order < 0:
            raise ConfigError("lm.order: must be >= 0")


def import_sources(cfg: TrainCtcConfig) -> tuple[str, ...]:
    """Import ``cfg.sources`` into ``out_dir/data/<i>-<kind>``; the folders (reused as they
    are when an earlier import of the same source finished)."""
    folders: list[str] = []
    for i, source in enumerate(cfg.sources):
        out = Path(cfg.out_dir) / "data" / f"{i}-{source.kind}"
        marker = out / "source.json"
        spec = json.dumps(to_dict(source), sort_keys=True)
        if marker.is_file() and marker.read_text(encoding="utf-8") == spec:
            log.info("%s: already imported", out)
        elif source.kind in ("commonvoice", "irish-synthetic"):
            language = source.language
            if source.kind == "irish-synthetic":
                prepare_irish(source.path, source.irish, progress=False)
                language = language or IRISH_LANGUAGE
            report = import_commonvoice(
                source.path,
                out,
                language,
                train_from_validated=source.train_from_validated,
                options=ImportOptions(progress=False),
            )
            log.info("%s", report.summary())
        else:
            if not source.language:
                raise ConfigError(f"sources[{i}].language: needed for an hf-disk source")
            report = import_hf_disk(
                source.path,
                out,
                source.language,
                source.text_column,
                options=ImportOptions(progress=False),
            )
            log.info("%s", report.summary())
        write_text_atomic(marker, spec, point="ctc.import_marker")
        folders.append(str(out))
    return tuple(folders)


def _eval_config(cfg: TrainCtcConfig, given: DataConfig | None, split: str) -> DataConfig | None:
    """The dev/test data: as given, or the train data's folders at ``split`` if they have it."""
    if given is not None:
        return given
    folders = [Path(m) for m in cfg.data.manifests]
    if folders and all(f.is_dir() and any((f / split).glob("*.jsonl")) for f in folders):
        return replace(cfg.data, split=split, speed_factors=(1.0,))
    log.info("no %s data: the train manifests are files, or their folders lack %s/", split, split)
    return None


def load_tokenizer(vocab_path: str | Path) -> Wav2Vec2CTCTokenizer:
    """The notebook's tokenizer over a ``vocab.json``."""
    return Wav2Vec2CTCTokenizer(
        str(vocab_path),
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        word_delimiter_token=WORD_DELIMITER,
    )


@dataclass
class CtcSplit:
    """A split ready for CTC: the filtered dataset, its collator and what was dropped."""

    dataset: SpeechDataset
    collator: CtcCollator
    report: LabelFilterReport
    texts: list[str]  # normalised transcripts, in dataset order


def load_split(
    data: DataConfig, normalizer: str, *, train: bool
) -> tuple[SpeechDataset, list[str]]:
    """The utterances of ``data`` and their normalised transcripts."""
    dataset = load_dataset(data, train=train)
    normalize = get_normalizer(normalizer)
    return dataset, [normalize(u.source_text) for u in dataset.utterances]


def prepare_split(
    data: DataConfig,
    loaded: tuple[SpeechDataset, list[str]],
    tokenizer: Wav2Vec2CTCTokenizer,
    frames_of: Any,
    split: str,
) -> CtcSplit:
    """Encode the labels of a loaded split and drop (and count) what CTC cannot learn from.

    ``frames_of``: (B,) samples → (B,) encoder output frames. Training data is judged at its
    fastest speed perturbation.
    """
    dataset, texts = loaded
    labels = encode_labels(texts, tokenizer)
    utts = dataset.utterances
    keep, report = filter_feasible(
        [u.id for u in utts],
        [u.duration for u in utts],
        labels,
        frames_of,
        split=split,
        max_speed=max(dataset.speed_factors),
    )
    if report.kept < report.total:
        log.warning(
            "%s: dropped %d of %d utterances (%d labels longer than the encoder output, "
            "%d empty after normalisation)",
            split,
            report.total - report.kept,
            report.total,
            report.label_too_long,
            report.empty_label,
        )
    if not keep:
        raise ConfigError(f"{split}: no utterance left after the CTC label-length filter")
    filtered = SpeechDataset(
        [utts[i] for i in keep],
        None,
        speed_factors=dataset.speed_factors,
        cache_bytes=data.cache_mb * 2**20,
        seed=data.seed,
    )
    kept_texts = [texts[i] for i in keep]
    collator = CtcCollator([labels[i] for i in keep], kept_texts)
    return CtcSplit(filtered, collator, report, kept_texts)


def _loader(data: DataConfig, split: CtcSplit) -> DataLoader[Any]:
    sampler = build_sampler(data, split.dataset, shuffle=False)
    return DataLoader(split.dataset, batch_sampler=sampler, collate_fn=split.collator)


def _vocab(cfg: TrainCtcConfig, texts: list[str], resume: bool) -> Wav2Vec2CTCTokenizer:
    """The run's tokenizer: ``out_dir/vocab.json`` is built from ``texts`` (or, on resume,
    reused so that label ids stay those of the checkpoints)."""
    path = Path(cfg.out_dir) / "vocab.json"
    if not (resume and path.is_file()):
        save_vocab(build_char_vocab(texts), path)
    return load_tokenizer(path)


def export_ctc(
    model: Wav2Vec2ForCTC,
    tokenizer: Wav2Vec2CTCTokenizer,
    folder: Path,
    meta: dict[str, Any],
    export_encoder: bool = True,
) -> Path:
    """Save the model + processor, ``samu_ctc.json`` and, optionally, ``encoder/``."""
    save_ctc_model(model, folder, tokenizer)
    if export_encoder:
        save_encoder(ctc_encoder(model), folder / ENCODER)
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (folder / CTC_META).write_text(text, encoding="utf-8")
    return folder


def read_ctc_meta(folder: str | Path) -> dict[str, Any]:
    """``samu_ctc.json`` of an exported folder (``normalizer``, ``languages``, ``lm``); the
    generic normaliser and no LM for a folder made elsewhere."""
    path = Path(folder) / CTC_META
    if not path.is_file():
        return {"normalizer": "generic", "languages": [], "lm": None}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def evaluate_ctc(
    model: Wav2Vec2ForCTC,
    task: CtcTask,
    loader: DataLoader[Any],
    lm: CtcLmDecoder | None = None,
) -> dict[str, Any]:
    """Greedy (and LM) WER/CER of ``model`` on ``loader``'s batches (normalised references)."""
    model.eval()
    device = next(model.parameters()).device
    refs: list[str] = []
    greedy: list[str] = []
    beam: list[str] = []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            logits, frames = task.forward(model, batch)
            refs += batch.references
            greedy += task.transcribe_logits(logits, frames)
            if lm is not None:
                beam += lm.decode(logits.float(), frames)
    result: dict[str, Any] = {
        "utterances": len(refs),
        "greedy": {"wer": wer(greedy, refs), "cer": cer(greedy, refs)},
    }
    if lm is not None:
        result["lm"] = {"wer": wer(beam, refs), "cer": cer(beam, refs)}
        result["lm_wer_change"] = result["lm"]["wer"] - result["greedy"]["wer"]
    result["examples"] = [
        {"ref": r, "greedy": g, **({"lm": beam[i]} if beam else {})}
        for i, (r, g) in enumerate(zip(refs[:10], greedy[:10], strict=True))
    ]
    return result


def run_train_ctc(cfg: TrainCtcConfig, resume: bool = False) -> Path:
    """Train and export a CTC model (see the module docstring); returns ``out_dir/final``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.data.manifests:
        cfg = replace(cfg, data=replace(cfg.data, manifests=import_sources(cfg)))
    data_cfg, train_cfg = batched(cfg.data, cfg.train)  # data.update_duration → accumulation
    cfg = replace(cfg, data=data_cfg, train=train_cfg)
    datas = {
        "train": cfg.data,
        "dev": _eval_config(cfg, cfg.dev, "dev"),
        "test": _eval_config(cfg, cfg.test, "test"),
    }
    loaded = {
        name: load_split(data, cfg.normalizer, train=name == "train")
        for name, data in datas.items()
        if data is not None
    }
    tokenizer = _vocab(cfg, loaded["train"][1], resume)
    # Frozen random parts (a preset's conv front end) are not in checkpoints: seed first so a
    # resumed run (or a second step in the same process, as in the pipeline) rebuilds them.
    seed_model_init(cfg.train)
    model = build_ctc_model(
        cfg.encoder, tokenizer.vocab_size, int(tokenizer.pad_token_id), cfg.final_dropout
    )
    if cfg.encoder.family == "wav2vec2":
        kernel, stride = model.config.conv_kernel, model.config.conv_stride
        task = CtcTask(tokenizer, kernel, stride)

        def frames_of(samples: torch.Tensor) -> torch.Tensor:
            return output_frames(samples, kernel, stride)
    else:  # fbank / log-mel front ends: the wrapped model knows its frame count

        def frames_of(samples: torch.Tensor) -> torch.Tensor:
            lengths = cast(torch.LongTensor, samples)
            return model._get_feat_extract_output_lengths(lengths).to(torch.long)

        task = CtcTask(tokenizer, (), (), frames=frames_of)

    splits: dict[str, tuple[DataConfig, CtcSplit]] = {}
    for name, pair in loaded.items():
        data = datas[name]
        assert data is not None
        splits[name] = (data, prepare_split(data, pair, tokenizer, frames_of, name))
    reports = {name: s.report.to_dict() for name, (_, s) in splits.items()}
    text = json.dumps(reports, indent=2, ensure_ascii=False)
    write_text_atomic(out / "label_filter.json", text, point="ctc.label_filter")
    train_data, train_split = splits["train"]
    rank, world = process_rank_and_count(cfg.train)
    sampler = build_sampler(train_data, train_split.dataset, rank=rank, world_size=world)
    dev_loader = _loader(*splits["dev"]) if "dev" in splits else None
    result = train(task, model, train_split.dataset, train_split.collator, sampler, cfg.train,
                   out, resume=resume, val_loader=dev_loader, run_config=cfg)  # fmt: skip
    log.info("CTC training: %d updates, %d skipped (non-finite)", result.step,
             result.nonfinite_skipped)  # fmt: skip
    if rank != 0:
        return out / FINAL
    return _finish(cfg, model, task, tokenizer, splits)


def _finish(
    cfg: TrainCtcConfig,
    model: Wav2Vec2ForCTC,
    task: CtcTask,
    tokenizer: Wav2Vec2CTCTokenizer,
    splits: dict[str, tuple[DataConfig, CtcSplit]],
) -> Path:
    """Export the model (and LM), then evaluate it on test."""
    out = Path(cfg.out_dir)
    final = out / FINAL
    languages = sorted(set(splits["train"][1].dataset.languages))
    lm_path: Path | None = None
    if cfg.lm.order > 0:
        text = out / "lm" / "train_text.txt"
        lines = "\n".join(splits["train"][1].texts) + "\n"
        write_text_atomic(text, lines, point="ctc.lm_text")
        lm_path = write_arpa(text, out / "lm" / LM_FILE, cfg.lm.order)
    meta = {
        "normalizer": cfg.normalizer,
        "languages": languages,
        "lm": LM_FILE if lm_path is not None else None,
        "lm_options": to_dict(cfg.lm.options) if lm_path is not None else None,
    }
    model = model.eval()
    with atomic_folder(final, point="ctc.final") as tmp:
        export_ctc(model, tokenizer, tmp, meta, cfg.export_encoder)
        if lm_path is not None:
            (tmp / LM_FILE).write_bytes(lm_path.read_bytes())
    if "test" in splits:
        lm = None
        if lm_path is not None:
            lm = CtcLmDecoder(task._decode_tokenizer, lm_path, tokenizer.vocab_size, cfg.lm.options)
        evaluation = evaluate_ctc(model, task, _loader(*splits["test"]), lm)
        report = json.dumps(evaluation, indent=2, ensure_ascii=False) + "\n"
        write_text_atomic(out / "evaluation.json", report, point="ctc.evaluation")
        log.info("test WER greedy %.4f%s", evaluation["greedy"]["wer"],
                 f", LM {evaluation['lm']['wer']:.4f}" if lm is not None else "")  # fmt: skip
    return final
