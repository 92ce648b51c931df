"""The data and sizes every benchmark uses: mini-CoVoST (cached), its target tokenizer, and the
size presets of a full run and of ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from samu_st.data.manifest import Utterance, read_manifest, resolve_audio
from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer


@dataclass(frozen=True)
class Sizes:
    """Model sizes, step counts and data amounts of one run."""

    encoder: str  # encoder preset of the training and decoding benchmarks (models/encoder.py)
    decoder: str  # decoder preset (models/decoder.py)
    st_steps: int  # optimizer updates per side in st_train
    ctc_steps: int  # optimizer updates per side in ctc_train
    warmup: int  # first updates of a side that are not timed
    st_max_duration: float  # seconds of padded speech per batch (configs/mini.yaml train_st)
    ctc_max_duration: float  # the same for CTC (configs/mini.yaml train_ctc)
    beam_train_steps: int  # updates that train the beam-search model (cached once trained)
    beam_utterances: int  # test utterances translated by both sides
    beam_batch_size: int  # utterances per generate() call of the plain HF way
    num_beams: int  # beam size
    max_new_tokens: int  # generation cap (configs/mini.yaml val_max_new_tokens)
    mp3_clips: int  # mp3 files decoded by data_loading
    rtf_encoder: str  # encoder preset timed by encoder_rtf ("paper" = XLS-R 300M)
    rtf_seconds: float  # clip length of encoder_rtf
    rtf_repeats: int  # timed forwards per precision (the fastest counts)
    gemm_n: int  # matrix size of the GEMM peak measurement
    padding_epochs: int  # sampler epochs averaged by the padding benchmark
    tokenizer_vocab: int  # target BPE vocabulary (train_st's tokenizer_vocab_size)
    samu_updates: int  # distillation updates per side in speechbrain_samu


FULL = Sizes(
    encoder="mini",
    decoder="mini",
    # 30: with 10 (7 timed) the same code's ratio moved by ±3 % between runs, one side's
    # throughput by up to 7 % (2026-12-05); a ~12 s timed window per side and round
    st_steps=30,
    ctc_steps=10,
    warmup=2,
    st_max_duration=60.0,
    ctc_max_duration=40.0,
    beam_train_steps=60,
    beam_utterances=200,
    beam_batch_size=16,
    num_beams=5,
    max_new_tokens=24,
    mp3_clips=200,
    rtf_encoder="paper",
    rtf_seconds=10.0,
    rtf_repeats=2,
    gemm_n=2048,
    padding_epochs=5,
    tokenizer_vocab=1000,
    samu_updates=100,
)

QUICK = Sizes(
    encoder="tiny",
    decoder="tiny",
    st_steps=3,
    ctc_steps=3,
    warmup=1,
    st_max_duration=4.0,
    ctc_max_duration=4.0,
    beam_train_steps=2,
    beam_utterances=6,
    beam_batch_size=4,
    num_beams=5,
    max_new_tokens=6,
    mp3_clips=6,
    rtf_encoder="tiny",
    rtf_seconds=2.0,
    rtf_repeats=2,
    gemm_n=256,
    padding_epochs=2,
    tokenizer_vocab=100,
    samu_updates=3,
)

# Two languages, a dozen numbers: built in about two seconds.
QUICK_CORPUS = MiniCovostConfig(
    seed=1,
    languages=("fr", "de"),
    number_max=30,
    train_per_hour=0.0,
    train_min=12,
    train_max=12,
    dev_per_language=1,
    test_per_language=3,
    unlabeled_per_language=0,
    train_speakers=3,
    dev_speakers=1,
    test_speakers=1,
)


def prepare_corpus(work: Path, quick: bool) -> Path:
    """mini-CoVoST in ``work`` (the default corpus, or the quick one); reused when present."""
    if quick:
        return prepare_mini(work / "mini-covost-quick", QUICK_CORPUS, progress=False)
    return prepare_mini(work / "mini-covost", MiniCovostConfig(), progress=False)


def read_split(corpus: Path, split: str) -> list[Utterance]:
    """Every utterance of ``split`` (all languages, sorted by file), audio paths absolute."""
    files = sorted((corpus / split).glob("*.jsonl"))
    return [replace(u, audio=str(resolve_audio(u, f))) for f in files for u in read_manifest(f)]


def bench_tokenizer(work: Path, corpus: Path, vocab_size: int) -> Path:
    """The target BPE tokenizer of the training targets, as ``train-st`` trains it (saved once
    and shared by both sides of every benchmark)."""
    folder = work / f"tokenizer-{corpus.name}-{vocab_size}"
    if not folder.is_dir():
        texts = [u.target_text for u in read_split(corpus, "train")]
        train_target_tokenizer(texts, vocab_size).save(folder)
    TargetTokenizer.load(folder)  # fails early on a broken folder
    return folder


@dataclass(frozen=True)
class Context:
    """What a benchmark gets: where to cache, which sizes, whether sides run in own processes."""

    work: Path  # cache folder: corpora, tokenizers, the trained beam-search model, mp3 clips
    quick: bool  # tiny corpus and models (tests)
    isolate: bool  # run each training side in a fresh process (clean peak memory)
    beam_model: Path | None = None  # beam_search: a trained translator folder (--model)
    out: Path | None = None  # the runner's --out file (scaling writes its plot beside it)
    # paper_step on a GPU machine: the GPU side only (its CPU side is the CPU machine's
    # measurement and takes minutes of the GPU machine's time)
    gpu_only: bool = False

    @property
    def sizes(self) -> Sizes:
        return QUICK if self.quick else FULL

    def corpus(self) -> Path:
        return prepare_corpus(self.work, self.quick)

    def tokenizer(self) -> Path:
        return bench_tokenizer(self.work, self.corpus(), self.sizes.tokenizer_vocab)
