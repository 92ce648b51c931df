"""Target-side tokenizers with one token per source language, for the translation decoder.

Two kinds share one small interface, :class:`TargetTokenizer`:

- ``mbart50``: a local copy of the MBART-50 tokenizer (``sentencepiece.bpe.model`` and/or
  ``tokenizer.json`` + ``tokenizer_config.json``, e.g. from
  ``facebook/mbart-large-50-many-to-one-mmt``). Source languages use MBART-50's own codes
  (``fr_XX``); the two CoVoST-2 languages MBART-50 lacks (ca, cy) get NEW tokens ``<lang:ca>``,
  ``<lang:cy>``, so the decoder's embedding must be resized to ``len(tokenizer)``.
- ``trained``: a small BPE tokenizer trained here on the target texts (the mini setting),
  with MBART's special tokens and ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3,
  ``<mask>`` 4) and a token ``<lang:xx>`` for every CoVoST-2 language and English.

Both save to a folder that ``AutoTokenizer`` loads, plus ``samu_tokenizer.json`` naming the
language tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from samu_st.errors import ModelLoadError
from samu_st.languages import BY_CODE, COVOST_CODES
from samu_st.models.encoder import lengths_to_mask

TokenizerKind = Literal["mbart50", "trained"]
# What follows the decoder start token </s> (see decoder_prefix): the source-language token,
# the target-language token (en_XX: what MBART-50 many-to-one was trained with), or both.
PrefixMode = Literal["source", "target", "both"]
PREFIX_MODES: tuple[PrefixMode, ...] = ("source", "target", "both")
TARGET_LANGUAGE = "en"  # every CoVoST-2 task used here is X → English
ALL_LANGUAGES: tuple[str, ...] = (*COVOST_CODES, TARGET_LANGUAGE)
SIDECAR = "samu_tokenizer.json"
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0-4, MBART's order for 0-3


def new_language_token(code: str) -> str:
    """The token added for a language that the tokenizer lacks, e.g. ``<lang:cy>``."""
    return f"<lang:{code}>"


def mbart50_language_token(code: str) -> str | None:
    """MBART-50's code for a CoVoST-2 language (``fr`` → ``fr_XX``); None where it lacks one."""
    if code == TARGET_LANGUAGE:
        return "en_XX"
    return BY_CODE[code].mbart50_code


# The MBART-50 code whose embedding row starts a language MBART-50 lacks. A copy puts the new
# row where the pretrained model keeps a similar language, and keeps ca and cy apart (mean
# initialisation left them 2.5e-6 apart: one task to the decoder). Catalan: Spanish, its
# closest Romance neighbour in MBART-50 (fr_XX or it_IT would do too). Welsh: MBART-50 has no
# Celtic language; English is its contact language (names, loans). The rows then train.
RELATED_MBART50: dict[str, str] = {"ca": "es_XX", "cy": "en_XX"}


def source_language(code: str) -> str:
    """A CoVoST-2 source-language code, also from its MBART-50 code (``fr_XX`` → ``fr``,
    ``zh_CN`` → ``zh-CN``, ``sv_SE`` → ``sv-SE``). ``KeyError`` listing the valid codes."""
    if code in BY_CODE:
        return code
    for lang in BY_CODE.values():
        if lang.mbart50_code is not None and lang.mbart50_code == code:
            return lang.code
    aliases = " ".join(f"{lang.mbart50_code}" for lang in BY_CODE.values() if lang.mbart50_code)
    raise KeyError(
        f"unknown source language {code!r}; CoVoST-2 codes: {' '.join(COVOST_CODES)} "
        f"(or their MBART-50 codes: {aliases})"
    )


class TargetTokenizer:
    """Encode target texts and decode outputs; map a language code to its single token id."""

    def __init__(
        self, hf: PreTrainedTokenizerBase, kind: TokenizerKind, language_tokens: dict[str, str]
    ) -> None:
        self.hf = hf
        self.kind: TokenizerKind = kind
        self.language_tokens = dict(language_tokens)
        self._language_ids: dict[str, int] = {}
        for code, token in self.language_tokens.items():
            token_id = _token_id(hf, token)
            if token_id is None:
                raise ModelLoadError(f"language token {token!r} ({code}) is not in the vocabulary")
            self._language_ids[code] = token_id
        if len(set(self._language_ids.values())) != len(self._language_ids):
            raise ModelLoadError("two languages share one language token")

    # -- ids -------------------------------------------------------------------------------
    def lang_token_id(self, code: str) -> int:
        """The id of language ``code``'s token (a CoVoST-2 code such as ``zh-CN``, or ``en``)."""
        try:
            return self._language_ids[code]
        except KeyError:
            known = " ".join(sorted(self._language_ids))
            raise KeyError(f"no language token for {code!r}; known: {known}") from None

    @property
    def language_ids(self) -> dict[str, int]:
        return dict(self._language_ids)

    def added_language_ids(self) -> dict[str, int]:
        """Languages whose token was ADDED to a pretrained MBART-50 vocabulary (ca, cy), by id:
        rows the pretrained decoder never learnt, so they train even under LNA-D. A trained
        tokenizer has none (its whole vocabulary is new with its decoder)."""
        if self.kind != "mbart50":
            return {}
        return {
            code: self._language_ids[code]
            for code, token in self.language_tokens.items()
            if token == new_language_token(code)
        }

    def related_token_ids(self) -> dict[int, int]:
        """Added language token id → the id of the MBART-50 code its row starts from
        (:data:`RELATED_MBART50`)."""
        out = {}
        for code, token_id in self.added_language_ids().items():
            related = RELATED_MBART50.get(code)
            related_id = _token_id(self.hf, related) if related is not None else None
            if related_id is not None:
                out[token_id] = related_id
        return out

    def prefix_ids(self, lang: str, mode: PrefixMode) -> list[int]:
        """The forced decoder prefix for source language ``lang`` (see :func:`decoder_prefix`)."""
        return decoder_prefix(self, lang, mode)

    @property
    def pad_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def eos_id(self) -> int:
        return int(self.hf.eos_token_id)

    @property
    def bos_id(self) -> int:
        # MBart50Tokenizer names <s> its cls token and may have no bos token.
        bos = self.hf.bos_token_id
        return int(bos) if bos is not None else int(_token_id(self.hf, "<s>") or 0)

    @property
    def decoder_start_id(self) -> int:
        """MBART starts decoding from ``</s>`` (fairseq convention), then the language token."""
        return self.eos_id

    def __len__(self) -> int:
        """Vocabulary size including added tokens: the decoder's embedding must have this many."""
        return len(self.hf)

    # -- text ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Target texts → token ids followed by ``</s>``, no language token, no padding."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        ids = self.hf(list(texts), add_special_tokens=False)["input_ids"]
        return [[*seq, self.eos_id] for seq in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids → text, dropping special and language tokens."""
        drop = set(self._language_ids.values())
        kept = [int(i) for i in ids if int(i) not in drop]
        return str(self.hf.decode(kept, skip_special_tokens=True)).strip()

    def batch_decode(self, batch: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the tokenizer files and ``samu_tokenizer.json`` into ``folder``."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(path)
        sidecar = {"format": 1, "kind": self.kind, "language_tokens": self.language_tokens}
        (path / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> TargetTokenizer:
        """Load a folder written by :meth:`save`, or a pristine MBART-50 tokenizer folder."""
        path = Path(folder)
        if not (path / SIDECAR).is_file():
            return load_mbart50_tokenizer(path)
        meta = json.loads((path / SIDECAR).read_text(encoding="utf-8"))
        if meta.get("format") != 1 or meta.get("kind") not in ("mbart50", "trained"):
            raise ModelLoadError(f"{path / SIDECAR}: unknown tokenizer metadata {meta}")
        return cls(_auto_tokenizer(path), meta["kind"], meta["language_tokens"])


def _token_id(hf: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of vocabulary entry ``token``; None when it is not one (unknown)."""
    token_id = hf.convert_tokens_to_ids(token)
    if not isinstance(token_id, int) or token_id == hf.unk_token_id:
        return None
    return token_id


def _auto_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a local tokenizer folder (nothing is downloaded)")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{path}: cannot load tokenizer: {err}") from None


def load_mbart50_tokenizer(
    folder: str | Path, languages: Sequence[str] = ALL_LANGUAGES
) -> TargetTokenizer:
    """A local MBART-50 tokenizer folder, plus new tokens for languages MBART-50 lacks."""
    path = Path(folder)
    hf = _auto_tokenizer(path)
    if _token_id(hf, "en_XX") is None:
        raise ModelLoadError(f"{path}: not an MBART-50 tokenizer (it has no en_XX token)")
    tokens: dict[str, str] = {}
    for code in languages:
        tokens[code] = mbart50_language_token(code) or new_language_token(code)
    missing = [t for t in tokens.values() if _token_id(hf, t) is None]
    if missing:
        hf.add_tokens(missing, special_tokens=True)
    return TargetTokenizer(hf, "mbart50", tokens)


def train_target_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1000,
    languages: Sequence[str] = ALL_LANGUAGES,
) -> TargetTokenizer:
    """Train a small BPE tokenizer on ``texts`` (the mini setting's English targets).

    BPE rather than Unigram because the ``tokenizers`` Unigram trainer is not deterministic
    (a different vocabulary on each run, even single-threaded), and a seeded pipeline must
    give the same model twice.

    The vocabulary may come out smaller than ``vocab_size`` on a small corpus; it always holds
    the five special tokens (ids 0-4, MBART's ids for the first four) and one token per language.
    """
    lang_tokens = {code: new_language_token(code) for code in languages}
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(lang_tokens),
        special_tokens=[*SPECIALS, *lang_tokens.values()],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=list(lang_tokens.values()),
    )
    return TargetTokenizer(hf, "trained", lang_tokens)


# -- decoder inputs ----------------------------------------------------------------------------


def decoder_prefix(tokenizer: TargetTokenizer, lang: str, mode: PrefixMode) -> list[int]:
    """The decoder prefix, forced at generation and the input of teacher forcing.

    - ``source``: ``[</s>, <lang>]`` (the language ID of the paper, §2);
    - ``target``: ``[</s>, en_XX]``, the prefix MBART-50 many-to-one was trained with;
    - ``both``: ``[</s>, <lang>, en_XX]``. The source token first, so that the token right
      before the first output word is en_XX, as in MBART-50's training: with its
      self-attention and embeddings frozen (LNA-D), the pretrained decoder's state that
      predicts the first English word is then the one it knows, and the source ID is extra
      context the trained cross-attention and layer norms can use.
    """
    start = tokenizer.decoder_start_id
    if mode == "source":
        return [start, tokenizer.lang_token_id(lang)]
    if mode == "target":
        return [start, tokenizer.lang_token_id(TARGET_LANGUAGE)]
    if mode == "both":
        return [start, tokenizer.lang_token_id(lang), tokenizer.lang_token_id(TARGET_LANGUAGE)]
    raise ValueError(f"unknown decoder prefix {mode!r}; choose one of {PREFIX_MODES}")


def prefix_length(mode: PrefixMode) -> int:
    """Tokens in the decoder prefix of ``mode``."""
    return 3 if mode == "both" else 2


class DecoderTargets(NamedTuple):
    """Teacher-forcing tensors, all (B, L): inputs ``[prefix…, y1 … y(n-1)]`` (padded with the
    pad id), labels ``[-100 × (P-1), y1 … yn, </s>]`` (padded with -100), mask (True = real
    token); P = the prefix length."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor


def make_decoder_targets(
    tokenizer: TargetTokenizer,
    texts: Sequence[str],
    langs: Sequence[str],
    max_length: int | None = None,
    prefix: PrefixMode = "source",
) -> DecoderTargets:
    """Decoder inputs and labels for target ``texts`` spoken in source languages ``langs``.

    The prefix (:func:`decoder_prefix`) is input, never a label: it is forced at generation
    time. With ``max_length`` (the decoder's positions), longer targets are cut, keeping
    ``</s>``.
    """
    if len(texts) != len(langs):
        raise ValueError(f"{len(texts)} texts but {len(langs)} languages")
    rows = []
    for ids, lang in zip(tokenizer.encode(texts), langs, strict=True):
        head = decoder_prefix(tokenizer, lang, prefix)
        if max_length is not None and len(ids) + len(head) - 1 > max_length:
            ids = [*ids[: max_length - len(head)], tokenizer.eos_id]
        rows.append(([*head, *ids[:-1]], [-100] * (len(head) - 1) + ids))
    width = max((len(inp) for inp, _ in rows), default=0)
    input_ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (inp, lab) in enumerate(rows):
        input_ids[i, : len(inp)] = torch.tensor(inp)
        labels[i, : len(lab)] = torch.tensor(lab)
    lengths = torch.tensor([len(inp) for inp, _ in rows], dtype=torch.long)
    return DecoderTargets(input_ids, labels, lengths_to_mask(lengths, width))


def generation_prefix(
    tokenizer: TargetTokenizer, langs: Sequence[str], prefix: PrefixMode = "source"
) -> torch.Tensor:
    """(B, P) forced decoder prefix of each source language (:func:`decoder_prefix`)."""
    return torch.tensor([decoder_prefix(tokenizer, lang, prefix) for lang in langs])


def generate_kwargs(
    tokenizer: TargetTokenizer,
    langs: Sequence[str],
    device: torch.device | str = "cpu",
    prefix: PrefixMode = "source",
) -> dict[str, Any]:
    """Model keyword arguments for ``model.generate(inputs=…, attention_mask=…, **these,
    generation_config=…)``: the forced prefix. The returned sequences start with it;
    :meth:`TargetTokenizer.decode` drops it."""
    return {"decoder_input_ids": generation_prefix(tokenizer, langs, prefix).to(device)}
