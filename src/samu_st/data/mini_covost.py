"""mini-CoVoST: the embedded default corpus, spoken numbers synthesised with espeak-ng.

Each clip is one number said in a CoVoST-2 source language; the target is its English words
(``"four hundred and twenty-three"``) and the source transcript its spelling in that language
(see :mod:`samu_st.data.numbers`). Mongolian, which espeak-ng cannot speak, is skipped and the
skip is recorded. Train sizes follow CoVoST-2's train hours; dev and test speakers use voice
variants no training speaker uses (see :mod:`samu_st.data.speakers`).

The default numbers run to 999 because corpus BLEU-4 needs 4-grams: every English number below
100 is one or two 13a tokens, so on 0-99 even a perfect system scores BLEU 0.

Layout of ``OUT`` (paths in manifests are relative to the manifest's folder, so ``OUT`` can move)::

    audio/<lang>/<id>.wav         16 kHz mono PCM-16 (or .flac)
    <split>/<lang>.jsonl          split in train, dev, test (samu_st.data.manifest schema)
    unlabeled.jsonl               audio of every language for SSL pretraining, texts "",
                                  split "unlabeled": extra clips by training speakers, plus the
                                  train clips when ``unlabeled_includes_train`` (never dev/test)
    corpus.json                   config, its hash, counts and hours, skipped languages, versions
    import_report.json            kept / skipped per split and language, as the importers write

Everything is deterministic from ``seed``: two runs write byte-identical files. A second call
with the same config (same hash of config, corpus version, espeak-ng and num2words versions)
returns at once; with a different config the corpus is regenerated and replaces the old one.
A folder that is not empty and holds no mini-CoVoST ``corpus.json`` is never overwritten. The
corpus is built in ``OUT.tmp-<pid>`` beside ``OUT`` and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from samu_st.audio import SAMPLE_RATE
from samu_st.config import to_dict
from samu_st.data.importers.common import ImportReport, SkipReason
from samu_st.data.manifest import Utterance, write_manifest
from samu_st.data.numbers import Spelling, english_words, espeak_text, source_spelling
from samu_st.data.speakers import (
    VARIANT_RE,
    Job,
    Speaker,
    check_espeak,
    espeak_version,
    make_speakers,
    render_all,
)
from samu_st.errors import ConfigError, SamuError
from samu_st.languages import LANGUAGES, Language, get_language

log = logging.getLogger(__name__)

CORPUS_NAME = "mini-CoVoST"
CORPUS_VERSION = 1  # bump when the same config would give different files
UNLABELED_MANIFEST = "unlabeled.jsonl"
LABELED_SPLITS: tuple[str, ...] = ("train", "dev", "test")
_EXTRA = "unlabeled"  # split name of the clips made only for SSL


@dataclass(frozen=True)
class MiniCovostConfig:
    """What mini-CoVoST to synthesise. Defaults: ~2,000 train clips (~40 min), 20 languages."""

    seed: int = 0  # every random choice (numbers, speakers, rates, pitches) derives from it
    languages: tuple[str, ...] = ()  # CoVoST-2 codes; () = all 21 (those espeak can't say: skipped)
    number_min: int = 0  # smallest number spoken
    number_max: int = 999  # largest; keep >= 100 for BLEU-4 to have 4-grams (module docstring)
    train_per_hour: float = 2.0  # train clips per hour of CoVoST-2 X→EN train data of the language
    train_min: int = 30  # ... but at least this many train clips per language
    train_max: int = 500  # ... and at most this many
    dev_per_language: int = 30  # dev clips per language (dev speakers)
    test_per_language: int = 30  # test clips per language (test speakers)
    unlabeled_per_language: int = 40  # extra SSL-only clips per language (train speakers)
    unlabeled_includes_train: bool = True  # list the train clips in unlabeled.jsonl too
    train_variants: tuple[str, ...] = (
        *("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "klatt", "klatt2", "klatt3"),
        *("klatt4", "adam", "Alex", "Andy", "Annie", "belinda", "benjamin", "caleb", "david"),
        *("edward", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert"),
        *("steph", "travis"),
    )  # espeak-ng voice variants of training (and unlabeled) speakers
    dev_variants: tuple[str, ...] = ("m7", "f4", "john", "aunty")  # dev speakers' variants
    test_variants: tuple[str, ...] = ("m8", "f5", "shelby", "victor", "iven3", "Alicia")  # test's
    train_speakers: int = 48  # distinct (variant, rate, pitch) speakers shared by all languages
    dev_speakers: int = 8  # the same for dev
    test_speakers: int = 12  # the same for test
    rate_range: tuple[int, int] = (160, 210)  # speaking rate, words per minute (espeak-ng -s)
    pitch_range: tuple[int, int] = (30, 70)  # base pitch 0-99 (espeak-ng -p)
    trim_db: float = -40.0  # trim leading/trailing audio quieter than this, relative to the peak
    trim_margin: float = 0.05  # seconds of silence kept on each side after trimming
    audio_format: Literal["wav", "flac"] = "wav"  # file format (and suffix), PCM-16 either way

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"mini-CoVoST config: {what}")

        for code in self.languages:
            try:
                get_language(code)
            except KeyError as err:
                raise ConfigError(f"mini-CoVoST config: languages: {err.args[0]}") from None
        need(len(set(self.languages)) == len(self.languages), "languages has duplicates")
        need(
            0 <= self.number_min <= self.number_max <= 999,
            "need 0 <= number_min <= number_max <= 999",
        )
        need(self.train_per_hour >= 0, "train_per_hour must be >= 0")
        need(0 <= self.train_min <= self.train_max, "need 0 <= train_min <= train_max")
        counts = (self.dev_per_language, self.test_per_language, self.unlabeled_per_language)
        need(min(counts) >= 0, "per-language counts must be >= 0")
        pools = {"train": self.train_variants, "dev": self.dev_variants, "test": self.test_variants}
        for name, pool in pools.items():
            need(len(pool) > 0, f"{name}_variants is empty")
            bad = [v for v in pool if not VARIANT_RE.match(v)]
            need(not bad, f"{name}_variants has invalid name(s) {bad}")
        shared = set(self.train_variants) & set(self.dev_variants + self.test_variants)
        shared |= set(self.dev_variants) & set(self.test_variants)
        need(not shared, f"variants {sorted(shared)} are in more than one split's list")
        speakers = (self.train_speakers, self.dev_speakers, self.test_speakers)
        need(min(speakers) >= 1, "speaker counts must be >= 1")
        need(80 <= self.rate_range[0] <= self.rate_range[1] <= 450, "rate_range within 80-450")
        need(0 <= self.pitch_range[0] <= self.pitch_range[1] <= 99, "pitch_range within 0-99")
        need(self.trim_db < 0 and self.trim_margin >= 0, "need trim_db < 0, trim_margin >= 0")


@dataclass(frozen=True)
class Clip:
    """One planned utterance."""

    id: str
    language: str  # CoVoST-2 code
    split: str  # train, dev, test, or "unlabeled" for SSL-only clips
    number: int
    speaker: Speaker
    voice: str  # espeak-ng voice of the language
    audio: str  # path relative to the corpus root


def train_size(lang: Language, cfg: MiniCovostConfig) -> int:
    """Train clips of ``lang``: proportional to its CoVoST-2 train hours, clipped."""
    return min(max(round(lang.train_hours * cfg.train_per_hour), cfg.train_min), cfg.train_max)


def resolve_languages(cfg: MiniCovostConfig) -> tuple[list[Language], dict[str, str]]:
    """Languages to synthesise and the skipped ones with the reason."""
    chosen = [get_language(c) for c in cfg.languages] if cfg.languages else list(LANGUAGES)
    skipped = {
        lang.code: f"espeak-ng has no {lang.name} voice" for lang in chosen if not lang.espeak_voice
    }
    return [lang for lang in chosen if lang.espeak_voice], skipped


def _balanced(items: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` draws that use every item once before any item twice (shuffled blocks)."""
    out: list[Any] = []
    while len(out) < n:
        block = list(items)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def speaker_pools(cfg: MiniCovostConfig) -> dict[str, tuple[Speaker, ...]]:
    """Speakers of each split; dev and test variants are never used for training."""
    spec = {
        "train": (cfg.train_variants, cfg.train_speakers),
        "dev": (cfg.dev_variants, cfg.dev_speakers),
        "test": (cfg.test_variants, cfg.test_speakers),
    }
    return {
        split: make_speakers(
            variants, n, cfg.rate_range, cfg.pitch_range, random.Random(f"{cfg.seed}:spk:{split}")
        )
        for split, (variants, n) in spec.items()
    }


def plan_clips(cfg: MiniCovostConfig, languages: Sequence[Language]) -> list[Clip]:
    """Every clip of the corpus, in a fixed order (language, split, index)."""
    pools = speaker_pools(cfg)
    numbers = range(cfg.number_min, cfg.number_max + 1)
    clips: list[Clip] = []
    for lang in languages:
        assert lang.espeak_voice is not None
        sizes = {
            "train": train_size(lang, cfg),
            "dev": cfg.dev_per_language,
            "test": cfg.test_per_language,
            _EXTRA: cfg.unlabeled_per_language,
        }
        for split, n in sizes.items():
            rng = random.Random(f"{cfg.seed}:{lang.code}:{split}")
            pool = pools["train" if split == _EXTRA else split]
            pairs = zip(_balanced(numbers, n, rng), _balanced(pool, n, rng), strict=True)
            for i, (number, speaker) in enumerate(pairs):
                uid = f"{lang.code}-{split}-{i:05d}"
                audio = f"audio/{lang.code}/{uid}.{cfg.audio_format}"
                clips.append(Clip(uid, lang.code, split, number, speaker, lang.espeak_voice, audio))
    return clips


def _utterance(
    clip: Clip, frames: int, spelling: Spelling, labeled: bool, prefix: str
) -> Utterance:
    return Utterance(
        id=clip.id,
        audio=prefix + clip.audio,
        duration=frames / SAMPLE_RATE,
        language=clip.language,
        source_text=spelling.spell(clip.number) if labeled else "",
        target_text=english_words(clip.number) if labeled else "",
        speaker=clip.speaker.id,
        split=clip.split if labeled else "unlabeled",
    )


def write_manifests(
    root: Path,
    clips: Sequence[Clip],
    frames: Sequence[int],
    spellings: dict[str, Spelling],
    cfg: MiniCovostConfig,
) -> dict[str, dict[str, list[Utterance]]]:
    """Write ``<split>/<lang>.jsonl`` and ``unlabeled.jsonl``; returns the kept utterances."""
    kept: dict[str, dict[str, list[Utterance]]] = {s: {} for s in (*LABELED_SPLITS, _EXTRA)}
    unlabeled: list[Utterance] = []
    for clip, n in zip(clips, frames, strict=True):
        if n == 0:
            continue
        spelling = spellings[clip.language]
        if clip.split != _EXTRA:
            utt = _utterance(clip, n, spelling, labeled=True, prefix="../")
            kept[clip.split].setdefault(clip.language, []).append(utt)
        if clip.split == _EXTRA or (clip.split == "train" and cfg.unlabeled_includes_train):
            unlabeled.append(_utterance(clip, n, spelling, labeled=False, prefix=""))
    for split in LABELED_SPLITS:
        for lang, utts in kept[split].items():
            write_manifest(root / split / f"{lang}.jsonl", sorted(utts, key=lambda u: u.id))
    unlabeled.sort(key=lambda u: u.id)
    write_manifest(root / UNLABELED_MANIFEST, unlabeled)
    kept[_EXTRA] = {}
    for utt in unlabeled:
        kept[_EXTRA].setdefault(utt.language, []).append(utt)
    return kept


def corpus_manifests(kept: dict[str, dict[str, list[Utterance]]]) -> list[str]:
    """Manifest paths relative to the corpus root."""
    labeled = [f"{s}/{lang}.jsonl" for s in LABELED_SPLITS for lang in sorted(kept[s])]
    return [*labeled, UNLABELED_MANIFEST]


def _hours(utts: Sequence[Utterance]) -> float:
    return round(sum(u.duration for u in utts) / 3600.0, 4)


def corpus_summary(
    cfg: MiniCovostConfig,
    digest: str,
    languages: Sequence[Language],
    skipped: dict[str, str],
    spellings: dict[str, Spelling],
    kept: dict[str, dict[str, list[Utterance]]],
) -> dict[str, Any]:
    """The content of corpus.json (deterministic: no times, no absolute paths)."""
    splits = {
        split: {lang: {"utterances": len(u), "hours": _hours(u)} for lang, u in sorted(by.items())}
        for split, by in kept.items()
    }
    totals = {
        split: {
            "utterances": sum(len(u) for u in by.values()),
            "hours": _hours([x for u in by.values() for x in u]),
        }
        for split, by in kept.items()
    }
    langs = [
        {"code": x.code, "name": x.name, "group": x.group, "espeak_voice": x.espeak_voice,
         "source_text": spellings[x.code].method, "note": spellings[x.code].note,
         "espeak_input": "phonemes" if espeak_text(x.code, 1).startswith("[[") else "digits"}
        for x in languages
    ]  # fmt: skip
    return {
        "name": CORPUS_NAME,
        "corpus_version": CORPUS_VERSION,
        "config_hash": digest,
        "config": to_dict(cfg),
        "espeak_ng": espeak_version(),
        "num2words": version("num2words"),
        "sample_rate": SAMPLE_RATE,
        "languages": langs,
        "skipped_languages": skipped,
        "speakers": {s: [x.id for x in pool] for s, pool in speaker_pools(cfg).items()},
        "splits": splits,
        "totals": totals,
        "manifests": corpus_manifests(kept),
    }


def import_report(
    cfg: MiniCovostConfig,
    kept: dict[str, dict[str, list[Utterance]]],
    silent: Sequence[Clip],
    skipped: dict[str, str],
) -> ImportReport:
    """import_report.json in the importers' schema: kept and hours per split and language,
    silent syntheses as skipped, languages espeak-ng cannot speak as excluded."""
    report = ImportReport(
        CORPUS_NAME, options=to_dict(cfg), sources=[f"espeak-ng {espeak_version()}"]
    )
    for split in (*LABELED_SPLITS, _EXTRA):
        for lang in sorted(kept[split]):
            for utt in kept[split][lang]:
                report.add_kept(utt)
    for clip in silent:
        report.add_skip(
            SkipReason.SILENT_AUDIO, clip.audio, f"espeak-ng said nothing for {clip.number}"
        )
    if skipped:
        report.excluded["no_espeak_voice"] = len(skipped)
        report.examples["no_espeak_voice"] = [f"{c}: {r}" for c, r in sorted(skipped.items())]
    report.manifests = corpus_manifests(kept)
    return report


def config_hash(cfg: MiniCovostConfig) -> str:
    """What the corpus bytes depend on: config, corpus version, espeak-ng and num2words."""
    payload = {
        "config": to_dict(cfg),
        "corpus_version": CORPUS_VERSION,
        "espeak_ng": espeak_version(),
        "num2words": version("num2words"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_corpus_json(out: Path) -> dict[str, Any] | None:
    """The corpus.json of a mini-CoVoST folder; None for a missing or empty folder."""
    if out.exists() and not out.is_dir():
        raise SamuError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("name") != CORPUS_NAME:
        raise SamuError(
            f"{out}: not empty and not a mini-CoVoST corpus (no valid corpus.json); "
            "refusing to overwrite it, choose another --out"
        )
    return meta


def _is_complete(out: Path, meta: dict[str, Any]) -> bool:
    """Every manifest there and as many audio files as corpus.json counts (a cheap check)."""
    if not all((out / m).is_file() for m in meta.get("manifests", [])):
        return False
    audio = out / "audio"
    dirs = [d for d in audio.iterdir() if d.is_dir()] if audio.is_dir() else []
    return sum(len(os.listdir(d)) for d in dirs) == meta.get("audio_files")


def _remove_stale_tmp(out: Path) -> None:
    """Delete ``OUT.tmp-<pid>`` / ``OUT.old-<pid>`` folders left by runs that were killed."""
    for tmp in [*out.parent.glob(f"{out.name}.tmp-*"), *out.parent.glob(f"{out.name}.old-*")]:
        pid = tmp.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


def _swap_in(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def build_corpus(
    root: Path, cfg: MiniCovostConfig, digest: str, workers: int, progress: bool
) -> None:
    """Synthesise the whole corpus into the (empty) folder ``root``."""
    languages, skipped = resolve_languages(cfg)
    voices = [lang.espeak_voice for lang in languages if lang.espeak_voice]
    check_espeak(voices, cfg.train_variants + cfg.dev_variants + cfg.test_variants)
    spellings = {lang.code: source_spelling(lang) for lang in languages}
    clips = plan_clips(cfg, languages)
    log.info("synthesising %d %s clips with %d workers", len(clips), CORPUS_NAME, workers)
    for lang in languages:
        (root / "audio" / lang.code).mkdir(parents=True)
    jobs = [
        Job(espeak_text(c.language, c.number), c.voice, c.speaker, root / c.audio) for c in clips
    ]
    frames = render_all(jobs, cfg.trim_db, cfg.trim_margin, workers, progress, desc=CORPUS_NAME)
    kept = write_manifests(root, clips, frames, spellings, cfg)
    silent = [clip for clip, n in zip(clips, frames, strict=True) if n == 0]
    import_report(cfg, kept, silent, skipped).write(root)
    meta = corpus_summary(cfg, digest, languages, skipped, spellings, kept)
    meta["audio_files"] = len(clips) - len(silent)
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    (root / "corpus.json").write_text(text + "\n", encoding="utf-8")  # last: marks completion


def prepare_mini(
    out_dir: Path, cfg: MiniCovostConfig, workers: int = 2, *, progress: bool = True
) -> Path:
    """Synthesise mini-CoVoST into ``out_dir`` (see the module docstring); returns its path.

    Returns at once when ``out_dir`` already holds this corpus with the same config hash; a
    corpus made with another config is regenerated and replaced. ``workers`` threads each run
    espeak-ng processes; ``progress`` shows a tqdm bar.
    """
    if workers < 1:
        raise SamuError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir).resolve()
    digest = config_hash(cfg)
    meta = _read_corpus_json(out)
    if meta is not None:
        if meta.get("config_hash") == digest and _is_complete(out, meta):
            log.info("%s: %s already prepared with this config", out, CORPUS_NAME)
            return out
        log.info("%s: config or files changed, regenerating %s", out, CORPUS_NAME)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build_corpus(tmp, cfg, digest, workers, progress)
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
