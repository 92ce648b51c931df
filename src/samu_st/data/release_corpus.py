"""The pretraining corpora of the shipped mini checkpoints (mini-XLS-R and mini-MBART-50).

XLS-R was pretrained on 436k hours of unlabeled speech in 128 languages and MBART-50 on text in
50 languages; neither can be downloaded here. This module synthesises their small stand-ins,
far larger and more varied than mini-CoVoST, deterministically from ``seed``:

- **speech** (``unlabeled.jsonl``, step 1 of mini-XLS-R): every language espeak-ng has (one
  voice per language code of ``espeak-ng --voices``, 130; ``covost_clips`` for the codes
  that mini-CoVoST uses, e.g. ``de``, ``cmn``, and ``other_clips`` for the rest, so French,
  listed only as ``fr-fr``, ``fr-be`` and ``fr-ch``, gets three times ``other_clips``),
  saying varied text — runs of frequent words of the language (wordfreq's word lists, where
  it has the language), numbers written out with num2words, and digit strings, dates and
  amounts that espeak-ng reads in the voice's language. Speakers are
  drawn from mini-CoVoST's TRAINING voice variants only, with wider rates and pitches, so
  mini-CoVoST's dev and test speakers stay unheard (as Common Voice test speakers are for
  XLS-R in the paper's setting, which the paper does not guarantee either).
- **text** (``text/<lang>.tsv``, mini-MBART-50): for English and every CoVoST-2 source
  language that MBART-50 has a code for (ca and cy have none, as in MBART-50), word runs and
  spelled numbers; one ``language<TAB>text`` line each.

No mini-CoVoST utterance is copied: the numbers and texts are drawn independently (English
number words do occur, as they occur in MBART-50's CC25/ML50 text).

The corpus is built in ``OUT.tmp-<pid>`` and renamed into place; a second call with the same
config returns at once (``corpus.json`` records the config hash and tool versions).
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
from functools import cache, lru_cache
from importlib.metadata import version
from pathlib import Path

from num2words import num2words

from samu_st.audio import SAMPLE_RATE
from samu_st.config import to_dict
from samu_st.data.manifest import LANGUAGE_CODE_RE, Utterance, write_manifest
from samu_st.data.mini_covost import MiniCovostConfig
from samu_st.data.speakers import (
    Job,
    Speaker,
    espeak_version,
    make_speakers,
    render_all,
    synthesize,
)
from samu_st.errors import ConfigError, SamuError
from samu_st.languages import LANGUAGES

log = logging.getLogger(__name__)

CORPUS_VERSION = 1  # bump when the same config would give different files
UNLABELED = "unlabeled.jsonl"
TEXT_DIR = "text"
# espeak-ng voices whose base code names a different language in wordfreq / num2words
_ALIASES = {"cmn": "zh", "yue": "zh", "nb": "nb", "fa-latn": "", "cmn-latn-pinyin": ""}


@dataclass(frozen=True)
class ReleaseCorpusConfig:
    """Sizes and variety of the pretraining corpora (defaults: ~5 h of speech, ~60k texts)."""

    seed: int = 0
    voices: tuple[str, ...] = ()  # espeak-ng language codes to speak; () = every one it has
    covost_clips: int = 240  # clips per CoVoST-2 source language espeak-ng speaks
    other_clips: int = 40  # clips per other espeak-ng language
    words: tuple[int, int] = (2, 9)  # words per word-run utterance (bounds included)
    number_share: float = 0.35  # share of utterances that are numbers, dates or amounts
    vocabulary: int = 3000  # most frequent words per language drawn from (wordfreq)
    speakers: int = 96  # distinct (variant, rate, pitch) training speakers
    rate_range: tuple[int, int] = (120, 250)  # espeak-ng -s, words per minute
    pitch_range: tuple[int, int] = (10, 90)  # espeak-ng -p
    texts_per_language: int = 3000  # text lines per MBART language (English included)
    trim_db: float = -40.0
    trim_margin: float = 0.05

    def __post_init__(self) -> None:
        if min(self.covost_clips, self.other_clips, self.texts_per_language) < 0:
            raise ConfigError("release corpus: clip and text counts must be >= 0")
        if not 1 <= self.words[0] <= self.words[1]:
            raise ConfigError("release corpus: words must be (min, max) with 1 <= min <= max")
        if not 0.0 <= self.number_share <= 1.0:
            raise ConfigError("release corpus: number_share must be in [0, 1]")


@lru_cache(maxsize=1)
def espeak_languages() -> tuple[tuple[str, ...], dict[str, str]]:
    """espeak-ng's language codes (``espeak-ng --voices``, column 2) that speak with a voice
    variant, sorted; and the others with the reason (some voices refuse variants)."""
    import subprocess

    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, check=True).stdout
    codes = {line.split()[1] for line in out.decode("utf-8", "replace").splitlines()[1:] if line}
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for code in sorted(codes):
        try:
            synthesize("1", code, Speaker("m1", 175, 50))
            usable.append(code)
        except SamuError as err:
            skipped[code] = str(err).rsplit(": ", 1)[-1]
    return tuple(usable), skipped


def base_language(voice: str) -> str:
    """The wordfreq / num2words code of an espeak-ng voice ('' where neither should be used)."""
    if voice in _ALIASES:
        return _ALIASES[voice]
    return _ALIASES.get(voice.split("-")[0], voice.split("-")[0])


@cache
def word_list(lang: str, size: int) -> tuple[str, ...]:
    """The ``size`` most frequent words of ``lang`` (wordfreq), () where it lacks the language."""
    import wordfreq

    if not lang or lang not in wordfreq.available_languages():
        return ()
    words = [w for w in wordfreq.top_n_list(lang, size * 2) if any(c.isalpha() for c in w)]
    return tuple(words[:size])


def spelled(number: int, lang: str) -> str | None:
    """``number`` written out by num2words in ``lang``; None where num2words cannot."""
    from num2words import CONVERTER_CLASSES

    if lang not in CONVERTER_CLASSES:  # num2words itself would fall back to lang[:2]
        return None
    try:
        return str(num2words(number, lang=lang))
    except (NotImplementedError, KeyError, ValueError, TypeError, OverflowError, AttributeError):
        return None


def number_text(rng: random.Random, lang: str, spell: bool) -> str:
    """A number, date, amount or digit string (spelled out with num2words when ``spell``)."""
    kind = rng.random()
    if kind < 0.2:
        return f"{rng.randint(1, 28)}.{rng.randint(1, 12)}.{rng.randint(1900, 2030)}"
    if kind < 0.3:
        return f"{rng.randint(0, 999)},{rng.randint(0, 99):02d}"
    number = rng.choice((rng.randint(0, 99), rng.randint(100, 9999), rng.randint(10**4, 10**6)))
    return (spelled(number, lang) if spell else None) or str(number)


def utterance_text(rng: random.Random, lang: str, cfg: ReleaseCorpusConfig, spell: bool) -> str:
    """One utterance: a run of frequent words, or (``number_share``) a number-like string."""
    words = word_list(lang, cfg.vocabulary)
    if not words or rng.random() < cfg.number_share:
        return number_text(rng, lang, spell)
    return " ".join(rng.choice(words) for _ in range(rng.randint(*cfg.words)))


def manifest_language(voice: str) -> str:
    """A manifest language code for an espeak-ng voice (CoVoST-2 code where it is one)."""
    for lang in LANGUAGES:
        if lang.espeak_voice == voice:
            return lang.code
    base = voice.split("-")[0]
    return base if LANGUAGE_CODE_RE.match(base) else "und"


def plan_speech(cfg: ReleaseCorpusConfig) -> list[tuple[Job, str]]:
    """Every clip: (render job with a path relative to the corpus root, manifest language)."""
    train_variants = MiniCovostConfig().train_variants  # never dev/test variants
    speakers: tuple[Speaker, ...] = make_speakers(
        train_variants, cfg.speakers, cfg.rate_range, cfg.pitch_range,
        random.Random(f"{cfg.seed}:speakers"),
    )  # fmt: skip
    covost = {lang.espeak_voice for lang in LANGUAGES if lang.espeak_voice}
    jobs: list[tuple[Job, str]] = []
    usable = espeak_languages()[0]
    unknown = sorted(set(cfg.voices) - set(usable) - set(espeak_languages()[1]))
    if unknown:
        raise ConfigError(f"release corpus: voices {unknown} are not espeak-ng languages")
    for voice in [v for v in usable if not cfg.voices or v in cfg.voices]:
        n = cfg.covost_clips if voice in covost else cfg.other_clips
        rng = random.Random(f"{cfg.seed}:speech:{voice}")
        lang = base_language(voice)
        for i in range(n):
            # espeak-ng reads digits itself; Arabic digit strings read non-deterministically
            # (samu_st.data.numbers), so Arabic numbers are spelled out
            text = utterance_text(rng, lang, cfg, spell=voice == "ar" or rng.random() < 0.5)
            speaker = rng.choice(speakers)
            path = Path("audio") / voice / f"{voice}-{i:05d}.wav"
            jobs.append((Job(text, voice, speaker, path), manifest_language(voice)))
    return jobs


def mbart_languages() -> list[tuple[str, str]]:
    """(CoVoST-2 code, wordfreq/num2words code) of English and of every CoVoST-2 language of
    mini-CoVoST with an MBART-50 code: ca and cy are left out as MBART-50 leaves them out;
    mn is not in mini-CoVoST (no espeak-ng voice)."""
    out = [("en", "en")]
    for lang in LANGUAGES:
        if lang.mbart50_code is None or lang.espeak_voice is None:
            continue
        code = lang.code.split("-")[0].lower()
        out.append((lang.code, "zh" if code == "zh" else code))
    return out


def plan_texts(cfg: ReleaseCorpusConfig) -> dict[str, list[str]]:
    """Distinct text lines per language code, for the MBART denoising corpus."""
    texts: dict[str, list[str]] = {}
    for code, lang in mbart_languages():
        rng = random.Random(f"{cfg.seed}:text:{code}")
        seen: dict[str, None] = {}
        for _ in range(cfg.texts_per_language * 3):
            if len(seen) >= cfg.texts_per_language:
                break
            seen[" ".join(utterance_text(rng, lang, cfg, spell=True).split())] = None
        texts[code] = list(seen)
    return texts


def config_hash(cfg: ReleaseCorpusConfig) -> str:
    meta = {
        "config": to_dict(cfg),
        "version": CORPUS_VERSION,
        "espeak-ng": espeak_version(),
        "num2words": version("num2words"),
        "wordfreq": version("wordfreq"),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _write(root: Path, cfg: ReleaseCorpusConfig, workers: int) -> dict[str, object]:
    jobs = plan_speech(cfg)
    for voice in {job.voice for job, _ in jobs}:
        (root / "audio" / voice).mkdir(parents=True, exist_ok=True)
    absolute = [Job(j.text, j.voice, j.speaker, root / j.path) for j, _ in jobs]
    frames = render_all(
        absolute, cfg.trim_db, cfg.trim_margin, workers, desc="release corpus", skip_failures=True
    )
    utts = [
        Utterance(
            job.path.stem, str(job.path), n / SAMPLE_RATE, lang, "", "", job.speaker.id, "unlabeled"
        )
        for (job, lang), n in zip(jobs, frames, strict=True)
        if n > 0
    ]
    write_manifest(root / UNLABELED, utts)
    texts = plan_texts(cfg)
    (root / TEXT_DIR).mkdir()
    for code, lines in texts.items():
        body = "".join(f"{code}\t{line}\n" for line in lines)
        (root / TEXT_DIR / f"{code}.tsv").write_text(body, encoding="utf-8")
    return {
        "clips": len(utts),
        "silent_skipped": sum(n == 0 for n in frames),
        "espeak_failures": [str(j.path) for (j, _), n in zip(jobs, frames, strict=True) if n < 0],
        "hours": round(sum(u.duration for u in utts) / 3600, 3),
        "voices": len({j.voice for j, _ in jobs}),
        "voices_skipped": espeak_languages()[1],
        "text_lines": {code: len(lines) for code, lines in texts.items()},
    }


def build_release_corpus(cfg: ReleaseCorpusConfig, out: str | Path, workers: int = 0) -> Path:
    """Synthesise the corpora into ``out`` (or return at once when it is already there)."""
    root = Path(out)
    digest = config_hash(cfg)
    meta_path = root / "corpus.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("hash") == digest:
        return root
    if root.exists() and not meta_path.is_file() and any(root.iterdir()):
        raise ConfigError(f"{root}: exists, is not empty and holds no release corpus.json")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary = _write(tmp, cfg, workers or (os.cpu_count() or 1))
    meta = {"hash": digest, "config": to_dict(cfg), "summary": summary,
            "espeak-ng": espeak_version(), "wordfreq": version("wordfreq")}  # fmt: skip
    (tmp / "corpus.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    log.info("release corpus: %s", summary)
    return root


def text_files(root: str | Path) -> Sequence[Path]:
    """The corpus's ``text/<lang>.tsv`` files, sorted."""
    return sorted((Path(root) / TEXT_DIR).glob("*.tsv"))
