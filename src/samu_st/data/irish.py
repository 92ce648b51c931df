"""Synthetic Irish (ga-IE) speech in a Common Voice folder layout, spoken by espeak-ng.

Test data and the README example of the CTC recipe (``samu-st train-ctc
configs/ctc-irish-mini.yaml``): short everyday Irish sentences written for this project (see
:data:`SENTENCES`), said by espeak-ng's ``ga`` voice with several synthetic speakers (voice
variant, rate, pitch; see :mod:`samu_st.data.speakers`). Dev and test speakers use voice
variants no training speaker uses. Everything is deterministic from ``seed``: two runs write
byte-identical files.

Layout of ``OUT``, a Common Voice language folder (``cv-corpus-N/ga-IE/``) that
:func:`samu_st.data.importers.commonvoice.import_commonvoice` reads::

    clips/common_voice_ga-IE_<n>.mp3   48 kHz mono MP3, written by soundfile (libsndfile/LAME)
    train.tsv dev.tsv test.tsv         Common Voice columns (client_id path sentence up_votes
    validated.tsv                      down_votes age gender accents locale segment); validated
                                       = all clips, as in a release
    corpus.json                        config, its hash, counts, hours, espeak-ng version

The sentences keep what makes Irish text hard to normalise, the cases the notebook's rules
exist for: fadas (á é í ó ú); ``n``/``t`` before a capital vowel (``i nÉirinn``, ``an
tUasal``, ``ár nAthair``: ``n-``/``t-`` after normalisation) and before a small one (``an
t-uisce``, ``a n-athair``); other eclipsis (``i gCiarraí``, ``ar an mbord``); elision with a
straight or typographic apostrophe (``d'ól``, ``d’ith``); the ``an-`` prefix; punctuation
, . ? ! ; : “ ” ‘ ’ –. They are short (1-9 words) and share a small vocabulary, so that a
small CTC model learns them from minutes of speech.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from samu_st.config import to_dict
from samu_st.data.mini_covost import MiniCovostConfig
from samu_st.data.speakers import (
    VARIANT_RE,
    Speaker,
    check_espeak,
    espeak_version,
    make_speakers,
    synthesize,
)
from samu_st.data.tsv import write_tsv
from samu_st.errors import ConfigError, SamuError

log = logging.getLogger(__name__)

LANGUAGE = "ga-IE"  # Common Voice code
VOICE = "ga"  # espeak-ng voice
CV_RATE = 48_000  # Common Voice clips are 48 kHz MP3
CORPUS_VERSION = 1  # bump when the same config would give different files
CV_COLUMNS = (
    *("client_id", "path", "sentence", "up_votes", "down_votes"),
    *("age", "gender", "accents", "locale", "segment"),
)
SPLIT_FILES = ("train", "dev", "test")

_SENTENCE_TEXT = """
# greetings and introductions
Dia duit.
Dia is Muire duit.
Conas atá tú?
Tá mé go maith.
Táim go breá, go raibh maith agat.
Slán abhaile!
Slán go fóill.
Oíche mhaith.
Maidin mhaith.
Fáilte romhat.
Cad is ainm duit?
Seán is ainm dom.
Is mise Máire.
Cá bhfuil tú i do chónaí?
Tá mé i mo chónaí i nGaillimh.
Tá mé i mo chónaí i mBaile Átha Cliath.
Is as Corcaigh mé.
Is as Éirinn í.
Tá sí ina cónaí i nDoire.
Tá siad ina gcónaí i gCiarraí.
Rugadh i nÉirinn é.
Tá an tUasal Ó Briain anseo.
Seo é an tUasal Mac Cárthaigh.
Dia duit, a Sheáin.
Conas atá tú, a Mháire?
# weather
Tá sé fuar inniu.
Tá sé te inniu.
Tá sé an-fhuar inniu.
Tá sé ag cur báistí.
Tá sé ag cur sneachta.
Tá an ghrian ag taitneamh.
Tá an lá go hálainn.
Is lá breá é.
Bhí sé fliuch inné.
Beidh sé grianmhar amárach.
Tá an ghaoth láidir.
Bhí an oíche fuar.
Beidh sé fuar anocht.
Tá an spéir gorm.
Tá an fharraige ciúin.
# food and drink
D'ól sé cupán tae.
D'ól mé gloine uisce.
D’ól sí an bainne.
D'ól siad an t-uisce.
Ar mhaith leat cupán caife?
Ba mhaith liom cupán tae.
Ba mhaith liom gloine uisce, le do thoil.
Tá ocras orm.
Tá tart orm.
D'ith sí an t-arán.
D'ith mé úll.
D’ith siad an dinnéar.
Tá an bainne fuar.
Tá an dinnéar réidh.
An bhfuil siúcra agat?
Níl aon bhainne againn.
Ceannaigh arán agus im.
Is maith liom tae.
Ní maith liom caife.
Tá an bia an-mhaith.
Tá an t-uisce te.
Cá bhfuil an t-arán?
Tá an t-úll dearg.
# family
Seo é m'athair.
Seo í mo mháthair.
Tá beirt deartháireacha agam.
Tá deirfiúr amháin agam.
Is múinteoir é m'athair.
Is dochtúir í mo mháthair.
Tá mo sheanmháthair sa bhaile.
Tá na páistí ag súgradh.
Tá an leanbh ina chodladh.
Ár nAthair atá ar neamh.
Tá a n-athair sa bhaile.
Tá a n-árasán mór.
Tá m’aintín ag teacht inniu.
Is é Seán mo dheartháir.
Tá mo dheirfiúr i nGaillimh.
# home
Tá an madra sa ghairdín.
Tá an cat ar an mbord.
Tá an leabhar ar an mbord.
Tá an carr taobh amuigh.
Cá bhfuil mo chóta?
Tá do chóta ar an gcathaoir.
Cuir ort do chóta.
Glan an chistin.
Nigh do lámha.
Tá an teach glan.
Tá an seomra beag.
Tá an t-árasán mór.
Tá an bord bán.
Tá an doras dearg.
Tá an féar glas.
Tá an oíche dorcha.
Osclaígh an doras.
Dún an fhuinneog.
Tá an fhuinneog oscailte.
Tá an teach fuar.
Tá an teach mór agus glan.
# school and work
Tá mé ag obair inniu.
Téim ar scoil gach lá.
Tá an scoil dúnta.
Tá an múinteoir sa seomra.
Léigh an leabhar seo.
Scríobh d'ainm anseo.
Tá obair bhaile agam.
Tá an rang thart.
Suigh síos, le do thoil.
Éist leis an múinteoir.
Labhair Gaeilge liom.
An bhfuil Gaeilge agat?
Tá beagán Gaeilge agam.
Is breá liom an Ghaeilge.
Tá an obair crua.
Tá an t-aire ag obair.
Labhair an tUachtarán inné.
Tá an tAire ag caint anois.
Tá cruinniú agam ar a deich.
# travel and places
Tá an bus déanach.
Tá an traein ag teacht.
Cá bhfuil an stáisiún?
Tá an siopa ar oscailt.
Tá an siopa dúnta.
Chuaigh mé go dtí an siopa.
Chuaigh sí go dtí an trá.
Rachaimid go Gaillimh amárach.
Tá an t-óstán in aice na farraige.
Tá an t-aerfort i bhfad ó bhaile.
Tháinig siad abhaile inné.
Bhí mé i nGaillimh inné.
Bhí siad i dTrá Lí.
Tá teach mór acu i gCiarraí.
Cas ar chlé ag an droichead.
Cas ar dheis anseo.
Fan anseo nóiméad.
Tá an bóthar fada.
Tá sé i bPort Láirge.
Chónaigh sí i nEochaill.
# time
Cén t-am é?
Tá sé a trí a chlog.
Feicfidh mé thú amárach.
Feicfidh mé ar ball thú.
Beidh mé ar ais ar an Luan.
Tá an cluiche ar an Satharn.
Tá sé ródhéanach.
Tá sé luath fós.
Éirím go luath gach maidin.
Tá an t-am ag imeacht.
Beidh mé ann ar a seacht.
# feelings and health
Tá áthas orm.
Tá brón orm.
Tá tuirse orm.
Tá fearg air.
Tá eagla uirthi.
Tá slaghdán orm.
Tá mé tinn inniu.
Tá sé sásta.
Tá sí an-sásta.
Níl mé go maith.
An bhfuil tú ceart go leor?
Tá mé ceart go leor, go raibh maith agat.
# requests and replies
Le do thoil.
Go raibh míle maith agat.
Gabh mo leithscéal.
Ná bí buartha.
Ná déan é sin!
Tar isteach!
Fan nóiméad!
Brostaigh!
Cabhraigh liom, le do thoil.
An féidir leat cabhrú liom?
Is féidir, cinnte.
Níl a fhios agam.
Tá a fhios agam.
Tuigim.
Ní thuigim.
Abair arís é, le do thoil.
Labhair go mall, le do thoil.
Dúirt sé ‘slán’ liom.
Dúirt sí: “Tá mé réidh.”
Tá – mar is eol duit – an siopa dúnta.
Tá sé fuar; tá sé fliuch.
# numbers and shopping
Cé mhéad atá air?
Tá sé cúig euro.
Tá dhá úll agam.
Tá trí mhadra acu.
Ceannaigh ceithre ubh.
Tá cat amháin agam.
Tá sé daor!
Tá sé saor.
An bhfuil airgead agat?
# sport and pastimes
Is maith liom peil.
Imrím iománaíocht.
Bhuamar an cluiche!
Chaill siad an cluiche.
Tá ceol ar siúl anocht.
Seinneann sí an fhidil.
Is breá leis ceol.
Léann sé an nuachtán gach maidin.
Féachann siad ar an teilifís.
D'fhág sé an teach go luath.
D'éirigh sí go luath inniu.
D'imigh siad abhaile.
Tá an t-éan ag canadh.
Chuala mé ceol na n-éan.
Is aoibhinn liom an fharraige.
"""

#: The sentences, in a fixed order (comment lines of the text above dropped).
SENTENCES: tuple[str, ...] = tuple(
    line for line in _SENTENCE_TEXT.strip().splitlines() if not line.startswith("#")
)


@dataclass(frozen=True)
class IrishCorpusConfig:
    """What synthetic Irish corpus to make. Defaults: ~1,240 train clips (~35 min), 100 dev and
    100 test clips."""

    seed: int = 0  # every random choice (sentence order, speakers, rates, pitches) derives from it
    sentences: int = 0  # use the first N of SENTENCES; 0 = all
    # Sentences said only in dev/test, never in train (Common Voice splits sentences so);
    # 0: dev/test say training sentences, with new speakers only.
    heldout_sentences: int = 0
    train_per_sentence: int = 6  # train clips per train sentence, by different train speakers
    dev_clips: int = 100  # dev clips (dev speakers)
    test_clips: int = 100  # test clips (test speakers)
    train_variants: tuple[str, ...] = MiniCovostConfig.train_variants  # espeak-ng variants
    dev_variants: tuple[str, ...] = MiniCovostConfig.dev_variants  # never used by train/test
    test_variants: tuple[str, ...] = MiniCovostConfig.test_variants  # never used by train/dev
    train_speakers: int = 24  # distinct (variant, rate, pitch) train speakers
    dev_speakers: int = 4
    test_speakers: int = 6
    rate_range: tuple[int, int] = (150, 190)  # words per minute (espeak-ng -s), per speaker
    pitch_range: tuple[int, int] = (30, 70)  # base pitch 0-99 (espeak-ng -p), per speaker
    trim_db: float = -40.0  # trim leading/trailing audio quieter than this, relative to the peak
    trim_margin: float = 0.05  # seconds of silence kept on each side

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"Irish corpus config: {what}")

        n = self.sentences or len(SENTENCES)
        need(0 <= self.sentences <= len(SENTENCES), f"sentences must be 0-{len(SENTENCES)}")
        need(0 <= self.heldout_sentences < n, "heldout_sentences must leave train sentences")
        counts = (self.train_per_sentence, self.dev_clips, self.test_clips)
        need(min(counts) >= 1, "clip counts must be >= 1")
        pools = (self.train_variants, self.dev_variants, self.test_variants)
        need(all(pools), "every split needs voice variants")
        need(all(VARIANT_RE.match(v) for p in pools for v in p), "invalid variant name")
        shared = set(pools[0]) & set(pools[1] + pools[2]) | set(pools[1]) & set(pools[2])
        need(not shared, f"variants {sorted(shared)} are in more than one split's list")
        need(min(self.train_speakers, self.dev_speakers, self.test_speakers) >= 1, "speakers")
        need(80 <= self.rate_range[0] <= self.rate_range[1] <= 450, "rate_range within 80-450")
        need(0 <= self.pitch_range[0] <= self.pitch_range[1] <= 99, "pitch_range within 0-99")


@dataclass(frozen=True)
class IrishClip:
    """One planned clip."""

    split: str  # train, dev or test
    path: str  # file name under clips/
    sentence: str
    speaker: Speaker


def client_id(speaker: Speaker) -> str:
    """A Common Voice-like client id (128 hex digits) for a synthetic speaker."""
    return hashlib.sha512(f"samu-st:{VOICE}:{speaker.id}".encode()).hexdigest()


def _balanced(items: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` draws that use every item once before any item twice (shuffled blocks)."""
    out: list[Any] = []
    while len(out) < n:
        block = list(items)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def split_sentences(cfg: IrishCorpusConfig) -> dict[str, list[str]]:
    """The sentences each split says (dev and test share theirs)."""
    chosen = list(SENTENCES[: cfg.sentences or len(SENTENCES)])
    if not cfg.heldout_sentences:
        return {"train": chosen, "dev": chosen, "test": chosen}
    order = list(chosen)
    random.Random(f"{cfg.seed}:heldout").shuffle(order)
    held = set(order[: cfg.heldout_sentences])
    train = [s for s in chosen if s not in held]
    rest = [s for s in chosen if s in held]
    return {"train": train, "dev": rest, "test": rest}


def plan_clips(cfg: IrishCorpusConfig) -> list[IrishClip]:
    """Every clip, in a fixed order: train (each sentence ``train_per_sentence`` times), dev,
    test. File names are numbered like Common Voice's."""
    spec = {
        "train": (cfg.train_variants, cfg.train_speakers),
        "dev": (cfg.dev_variants, cfg.dev_speakers),
        "test": (cfg.test_variants, cfg.test_speakers),
    }
    sentences = split_sentences(cfg)
    clips: list[IrishClip] = []
    for split, (variants, count) in spec.items():
        rng = random.Random(f"{cfg.seed}:{split}")
        pool = make_speakers(variants, count, cfg.rate_range, cfg.pitch_range, rng)
        if split == "train":
            texts = [s for s in sentences[split] for _ in range(cfg.train_per_sentence)]
        else:
            texts = _balanced(sentences[split], getattr(cfg, f"{split}_clips"), rng)
        for text, speaker in zip(texts, _balanced(pool, len(texts), rng), strict=True):
            name = f"common_voice_{LANGUAGE}_{20_000_000 + len(clips)}.mp3"
            clips.append(IrishClip(split, name, text, speaker))
    return clips


def render_clip(clip: IrishClip, clips_dir: Path, cfg: IrishCorpusConfig) -> int:
    """Synthesise one clip as 48 kHz MP3; its length in samples (0: silent, not written)."""
    samples = synthesize(
        clip.sentence,
        VOICE,
        clip.speaker,
        trim_db=cfg.trim_db,
        margin=cfg.trim_margin,
        sample_rate=CV_RATE,
    )
    if samples.size == 0 or int(np.abs(samples.astype(np.int32)).max()) < 33:  # < -60 dBFS
        return 0
    sf.write(clips_dir / clip.path, samples, CV_RATE, format="MP3", subtype="MPEG_LAYER_III")
    return int(samples.size)


def _render_all(
    clips: Sequence[IrishClip], clips_dir: Path, cfg: IrishCorpusConfig, workers: int, bar: bool
) -> list[int]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda c: render_clip(c, clips_dir, cfg), clips)
        return list(tqdm(jobs, total=len(clips), desc="Irish clips", disable=None if bar else True))


def _row(clip: IrishClip) -> dict[str, str]:
    return {
        **dict.fromkeys(CV_COLUMNS, ""),
        "client_id": client_id(clip.speaker),
        "path": clip.path,
        "sentence": clip.sentence,
        "up_votes": "2",
        "down_votes": "0",
        "locale": LANGUAGE,
    }


def config_hash(cfg: IrishCorpusConfig) -> str:
    """What the corpus bytes depend on: config, sentences, corpus and espeak-ng versions."""
    key = {
        "config": to_dict(cfg),
        "sentences": SENTENCES,
        "version": CORPUS_VERSION,
        "espeak_ng": espeak_version(),
        "soundfile": sf.__libsndfile_version__,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_corpus(root: Path, cfg: IrishCorpusConfig, digest: str, workers: int, bar: bool) -> None:
    """Synthesise the whole corpus into the empty folder ``root``."""
    check_espeak([VOICE], cfg.train_variants + cfg.dev_variants + cfg.test_variants)
    clips = plan_clips(cfg)
    (root / "clips").mkdir(parents=True)
    frames = _render_all(clips, root / "clips", cfg, workers, bar)
    kept = [(c, n) for c, n in zip(clips, frames, strict=True) if n > 0]
    for split in SPLIT_FILES:
        write_tsv(root / f"{split}.tsv", CV_COLUMNS, [_row(c) for c, _ in kept if c.split == split])
    write_tsv(root / "validated.tsv", CV_COLUMNS, [_row(c) for c, _ in kept])
    meta = {
        "corpus": "samu-st synthetic Irish",
        "config": to_dict(cfg),
        "config_hash": digest,
        "espeak_ng": espeak_version(),
        "clips": {s: sum(c.split == s for c, _ in kept) for s in SPLIT_FILES},
        "hours": {
            s: round(sum(n for c, n in kept if c.split == s) / CV_RATE / 3600, 6)
            for s in SPLIT_FILES
        },
        "speakers": {s: len({c.speaker for c, _ in kept if c.split == s}) for s in SPLIT_FILES},
        "silent_skipped": len(clips) - len(kept),
    }
    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (root / "corpus.json").write_text(text, encoding="utf-8")  # last: marks completion


def _existing_hash(out: Path) -> str | None:
    """The config hash of a complete corpus in ``out``; None if ``out`` is absent or empty."""
    meta_path = out / "corpus.json"
    if meta_path.is_file():
        try:
            return str(json.loads(meta_path.read_text(encoding="utf-8"))["config_hash"])
        except (ValueError, KeyError, OSError):
            pass
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SamuError(f"{out}: exists and holds no synthetic Irish corpus; not overwriting it")
    return None


def prepare_irish(
    out_dir: str | Path,
    cfg: IrishCorpusConfig | None = None,
    workers: int = 2,
    *,
    progress: bool = True,
) -> Path:
    """Synthesise the Irish corpus into ``out_dir`` (see the module docstring); returns its path.

    Returns at once when ``out_dir`` already holds this corpus with the same config hash; a
    corpus made with another config is replaced. A non-empty folder that holds no such corpus
    is never overwritten. The corpus is built beside ``out_dir`` and renamed into place.
    """
    cfg = cfg or IrishCorpusConfig()
    if workers < 1:
        raise SamuError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir).resolve()
    digest = config_hash(cfg)
    if _existing_hash(out) == digest:
        log.info("%s: synthetic Irish corpus already prepared with this config", out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_corpus(tmp, cfg, digest, workers, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
