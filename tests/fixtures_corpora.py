"""Test factories: Common Voice, CoVoST-2 and ``save_to_disk`` folders with the real file names and
columns, and short mp3 clips written by soundfile (48 kHz mono, like Common Voice); the tiny
mini-CoVoST corpora, quiet training configs and random tiny translators of the step tests.

TSVs are written the way Common Voice writes them: tab-joined, UTF-8, no quoting.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from num2words import num2words
from transformers import SpeechEncoderDecoderModel

from samu_st.data.mini_covost import MiniCovostConfig, prepare_mini
from samu_st.models.decoder import DecoderConfig
from samu_st.models.encoder import EncoderConfig
from samu_st.models.tokenizer import TargetTokenizer, train_target_tokenizer
from samu_st.models.translator import TranslatorConfig, build_translator
from samu_st.training import TrainConfig
from samu_st.training.config import OptimConfig, ScheduleConfig

CV_RATE = 48_000
# Columns of a Common Voice (>= 7.0) validated/train/dev/test.tsv.
CV_COLUMNS = (
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "locale",
    "segment",
)


def tone(seconds: float, sample_rate: int = CV_RATE, freq: float = 220.0) -> np.ndarray:
    """A 0.3-amplitude sine, float32 (S,)."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_mp3(
    path: Path,
    seconds: float = 0.5,
    sample_rate: int = CV_RATE,
    channels: int = 1,
    silent: bool = False,
) -> Path:
    """An mp3 clip (soundfile / libsndfile's LAME encoder)."""
    x = np.zeros(round(seconds * sample_rate), np.float32) if silent else tone(seconds, sample_rate)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sample_rate, format="MP3", subtype="MPEG_LAYER_III")
    return path


def corrupt(path: Path, n: int = 3000, seed: int = 0) -> None:
    """Replace a file with random bytes."""
    path.write_bytes(np.random.default_rng(seed).bytes(n))


def truncate(path: Path, keep: float | int) -> None:
    """Keep the first ``keep`` bytes (an int) or fraction (a float) of a file."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])


def write_raw_tsv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    """Tab-joined lines, as Common Voice writes its TSVs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cv_row(lang: str, clip: str, sentence: str, speaker: str) -> dict[str, str]:
    return {
        "client_id": speaker,
        "path": clip,
        "sentence": sentence,
        "up_votes": "2",
        "down_votes": "0",
        "age": "",
        "gender": "",
        "accents": "",
        "locale": lang,
        "segment": "",
    }


def clip_seconds(i: int) -> float:
    """Clip i lasts 0.3-0.65 s, so durations differ."""
    return 0.3 + 0.05 * (i % 8)


@dataclass
class CvFolder:
    """A Common Voice language folder ``<root>/<lang>/`` with clips and TSVs."""

    lang_dir: Path
    lang: str
    rows: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # tsv stem -> rows

    @property
    def clips(self) -> Path:
        return self.lang_dir / "clips"

    def tsv(self, name: str) -> Path:
        return self.lang_dir / f"{name}.tsv"

    def clip(self, split: str, i: int) -> Path:
        return self.clips / self.rows[split][i]["path"]

    def write_tsvs(self) -> None:
        for name, rows in self.rows.items():
            write_raw_tsv(self.tsv(name), CV_COLUMNS, ([r[c] for c in CV_COLUMNS] for r in rows))


def make_commonvoice(
    root: Path,
    lang: str = "ga-IE",
    counts: dict[str, int] | None = None,
) -> CvFolder:
    """train/dev/test with distinct speakers and sentences, validated.tsv = all of them plus
    three extra rows: one new (speaker and sentence), one by a dev speaker, one saying a test
    sentence; and an empty other.tsv / invalidated.tsv, as in a release."""
    counts = counts or {"train": 3, "dev": 2, "test": 2}
    folder = CvFolder(root / lang, lang)
    n = 0
    for split, count in counts.items():
        folder.rows[split] = []
        for i in range(count):
            clip = f"common_voice_{lang}_{1000 + n}.mp3"
            write_mp3(folder.clips / clip, clip_seconds(n))
            folder.rows[split].append(
                cv_row(lang, clip, f"{split} sentence {i}", f"{split}-spk{i}")
            )
            n += 1
    extra = [
        ("new sentence", "new-spk"),
        ("another sentence", "dev-spk0"),
        (folder.rows["test"][0]["sentence"] if "test" in folder.rows else "x", "other-spk"),
    ]
    validated = [r for rows in folder.rows.values() for r in rows]
    for sentence, speaker in extra:
        clip = f"common_voice_{lang}_{1000 + n}.mp3"
        write_mp3(folder.clips / clip, clip_seconds(n))
        validated.append(cv_row(lang, clip, sentence, speaker))
        n += 1
    folder.rows["validated"] = validated
    folder.rows["other"] = []
    folder.rows["invalidated"] = []
    folder.write_tsvs()
    return folder


COVOST_SPLIT_CYCLE = ("train", "train_covost", "dev", "test")


@dataclass
class CovostFixture:
    """CoVoST TSVs in ``covost_dir``; Common Voice ``cv_root/<lang>/{clips,validated.tsv}``."""

    covost_dir: Path
    cv_root: Path
    rows: dict[
        str, list[dict[str, str]]
    ]  # lang -> rows (path sentence translation client_id split)

    def clip(self, lang: str, i: int) -> Path:
        return self.cv_root / lang / "clips" / self.rows[lang][i]["path"]

    def tsv(self, lang: str) -> Path:
        return self.covost_dir / f"covost_v2.{lang}_en.tsv"


def make_covost(
    root: Path,
    langs: Sequence[str] = ("fr", "de"),
    n: int = 6,
    form: str = "released",
) -> CovostFixture:
    """CoVoST-2 X→EN for ``langs``, ``n`` clips each; ``split`` cycles train, train_covost, dev,
    test. ``form``: "released" (``path translation split``, sentence/client_id in validated.tsv),
    "full" (all five columns), "per_split" (get_covost_splits.py output) or "tar" (released,
    as ``.tsv.tar.gz``)."""
    covost_dir, cv_root = root / "covost", root / "cv"
    covost_dir.mkdir(parents=True, exist_ok=True)
    fixture = CovostFixture(covost_dir, cv_root, {})
    for lang in langs:
        rows = []
        for i in range(n):
            clip = f"common_voice_{lang}_{2000 + i}.mp3"
            write_mp3(cv_root / lang / "clips" / clip, clip_seconds(i))
            rows.append(
                {
                    "path": clip,
                    "sentence": f"{lang} phrase {i}",
                    "translation": f"english phrase {i}",
                    "client_id": f"{lang}-spk{i % 3}",
                    "split": COVOST_SPLIT_CYCLE[i % 4],
                }
            )
        fixture.rows[lang] = rows
        validated = [cv_row(lang, r["path"], r["sentence"], r["client_id"]) for r in rows]
        write_raw_tsv(
            cv_root / lang / "validated.tsv",
            CV_COLUMNS,
            ([v[c] for c in CV_COLUMNS] for v in validated),
        )
        write_covost_tsvs(fixture, lang, form)
    return fixture


def write_covost_tsvs(fixture: CovostFixture, lang: str, form: str) -> None:
    """(Re)write the CoVoST TSV(s) of ``lang`` from ``fixture.rows``."""
    rows = fixture.rows[lang]
    if form in ("released", "tar"):
        cols: tuple[str, ...] = ("path", "translation", "split")
        tsv = write_raw_tsv(fixture.tsv(lang), cols, ([r[c] for c in cols] for r in rows))
        if form == "tar":
            with tarfile.open(f"{tsv}.tar.gz", "w:gz") as tar:
                data = tsv.read_bytes()
                info = tarfile.TarInfo(tsv.name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            tsv.unlink()
    elif form == "full":
        cols = ("path", "sentence", "translation", "client_id", "split")
        write_raw_tsv(fixture.tsv(lang), cols, ([r[c] for c in cols] for r in rows))
    elif form == "per_split":
        cols = ("path", "sentence", "translation", "client_id")
        for split in ("train", "dev", "test"):
            chosen = [r for r in rows if r["split"] in ((split, f"{split}_covost"))]
            path = fixture.covost_dir / f"covost_v2.{lang}_en.{split}.tsv"
            write_raw_tsv(path, cols, ([r[c] for c in cols] for r in chosen))
    else:
        raise ValueError(form)


# --- tiny models and corpora of the step tests ---------------------------------------------

# Encoder overrides that make a tiny wav2vec2 deterministic in training mode.
NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0}
# A tiny adapter-mode speech translator (wav2vec2 + length adaptor + MBART).
TINY_TRANSLATOR = TranslatorConfig(
    encoder=EncoderConfig(size="tiny", mode="adapters"),
    decoder=DecoderConfig(preset="tiny"),
    length_adaptor_layers=2,
)
# Two languages, a handful of numbers, 8 train clips each: prepare_mini makes it in ~2 s.
TINY_CORPUS = MiniCovostConfig(
    seed=1,
    languages=("fr", "de"),
    number_max=12,
    train_per_hour=0.0,
    train_min=8,
    train_max=8,
    dev_per_language=4,
    test_per_language=1,
    unlabeled_per_language=0,
    train_speakers=4,
    dev_speakers=2,
    test_speakers=1,
)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` torch threads (tiny models: OpenMP hand-offs cost more than the maths)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_corpus_config(**changes: Any) -> MiniCovostConfig:
    """``TINY_CORPUS`` with ``changes``."""
    return replace(TINY_CORPUS, **changes)


def mini_corpus(tmp_path_factory: pytest.TempPathFactory, cfg: MiniCovostConfig) -> Path:
    """A mini-CoVoST corpus folder made by espeak-ng (the test is skipped without it)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    return prepare_mini(tmp_path_factory.mktemp("c") / "mini", cfg, progress=False)


def quiet_train(
    steps: int,
    lr: float,
    *,
    phase_ratio: tuple[float, float, float] = (0.1, 0.9, 0.0),
    **fields: Any,
) -> TrainConfig:
    """A TrainConfig without tensorboard or progress bar, saving every 1000 updates by default;
    ``fields`` set (or override) any other TrainConfig field."""
    return TrainConfig(
        **{
            "max_steps": steps,
            "save_every": 1000,
            "tensorboard": False,
            "progress_bar": False,
            "optim": OptimConfig(lr=lr),
            "schedule": ScheduleConfig(phase_ratio=phase_ratio),
            **fields,
        }
    )


def number_tokenizer() -> TargetTokenizer:
    """A target tokenizer trained on the English words of 0-99."""
    return train_target_tokenizer([num2words(i) for i in range(100)], vocab_size=80)


def random_translator(
    tokenizer: TargetTokenizer, eos_bias: float | None = None
) -> SpeechEncoderDecoderModel:
    """A tiny random ``TINY_TRANSLATOR`` (seed 0, eval mode) whose outputs depend on the audio.

    A transformers-initialised tiny decoder has logits of std ~0.07 that hardly depend on the
    audio; larger weights and non-identity adapters make outputs differ. Tokens that decode to
    nothing are made unlikely. ``eos_bias``: a bias on ``</s>`` logits, so hypotheses end at
    different lengths."""
    torch.manual_seed(0)
    translator = build_translator(TINY_TRANSLATOR, tokenizer).eval()
    with torch.no_grad():
        for name, p in translator.named_parameters():
            if ".up." in name:
                torch.nn.init.normal_(p, std=0.3)
            if name.startswith(("decoder.", "enc_to_dec_proj.")) and p.dim() == 2:
                torch.nn.init.normal_(p, std=1.0)
        silent = [*tokenizer.language_ids.values(), 0, 1, 3, 4]
        translator.decoder.get_input_embeddings().weight[silent] *= 0.05
        if eos_bias is not None:
            head = translator.decoder.lm_head
            head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
            head.bias[tokenizer.eos_id] = eos_bias
    return translator


def random_st_items() -> list[dict[str, Any]]:
    """Three dataset items of different lengths and languages (random audio) for an
    ``STCollator``: a padded step-3 batch."""
    g = torch.Generator().manual_seed(0)
    clips = [(8000, "fr", "twenty one two"), (5000, "de", "two"), (6500, "es", "three one")]
    return [
        {"wav": torch.randn(n, generator=g).numpy(), "id": f"u{i}", "language": lang,
         "index": i, "source_text": t, "target_text": t}
        for i, (n, lang, t) in enumerate(clips)
    ]  # fmt: skip
