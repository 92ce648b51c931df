"""CTC decoding: greedy, and beam search with a word n-gram LM (pyctcdecode or flashlight).

Logits ``(B, T, V)`` always travel with their output lengths ``(B,)``: frames past a row's
length are padding and are never decoded. The vocabulary is a ``Wav2Vec2CTCTokenizer``'s:
its pad token is the CTC blank (as in ``Wav2Vec2ForCTC``), ``|`` is the word delimiter, and an
``[UNK]`` output is written ``⁇`` (one character, as pyctcdecode writes it).

LM beam search is an optional extra (``pip install 'samu-st[lm]'``): pyctcdecode + kenlm
(lexicon-free: any character string can be output, the LM scores whole words), or
flashlight-text, which is faster but lexicon-constrained: it can only output words listed in
the ARPA model's unigrams. Build the ARPA model with :mod:`samu_st.decoding.ngram`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from samu_st.errors import ConfigError, DataError

UNK_TEXT = "⁇"
_LM_EXTRA = "pip install 'samu-st[lm]'"


class CtcTokenizer(Protocol):
    """What decoding needs of a ``Wav2Vec2CTCTokenizer``."""

    pad_token: Any
    unk_token: Any
    word_delimiter_token: Any
    pad_token_id: int | None
    all_special_tokens: list[str]

    def convert_ids_to_tokens(self, ids: list[int]) -> Any: ...


def ctc_labels(tokenizer: CtcTokenizer, vocab_size: int, keep_special: bool = False) -> list[str]:
    """The text of each of the ``vocab_size`` output ids: blank → "", ``|`` → " ",
    ``[UNK]`` → "⁇"; other special tokens → "" unless ``keep_special`` (pyctcdecode needs
    distinct labels)."""
    tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(vocab_size)))]
    special = set(tokenizer.all_special_tokens)
    labels = []
    for token in tokens:
        if token == str(tokenizer.pad_token):
            labels.append("")
        elif token == str(tokenizer.word_delimiter_token):
            labels.append(" ")
        elif token == str(tokenizer.unk_token):
            labels.append(UNK_TEXT)
        else:
            labels.append("" if token in special and not keep_special else token)
    return labels


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _lengths(logits: torch.Tensor, lengths: torch.Tensor | np.ndarray | None) -> list[int]:
    batch, frames = logits.shape[:2]
    if lengths is None:
        return [frames] * batch
    out = [int(n) for n in _as_tensor(lengths).reshape(-1)]
    if len(out) != batch or any(n < 0 or n > frames for n in out):
        raise ValueError(f"lengths {out} do not fit logits of shape {tuple(logits.shape)}")
    return out


def greedy_ids(
    logits: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray | None,
    blank_id: int,
) -> list[list[int]]:
    """Best path: argmax per frame, repeats collapsed, blanks removed, padding ignored.

    ``logits`` (B, T, V); ``lengths`` (B,) valid frames per row (None: all T).
    """
    scores = _as_tensor(logits)
    if scores.ndim != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(scores.shape)}")
    valid = _lengths(scores, lengths)
    best = scores.argmax(dim=-1)  # (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=-1)
    frame = torch.arange(best.shape[1]).unsqueeze(0)
    keep = (best != blank_id) & (best != previous) & (frame < torch.tensor(valid).unsqueeze(1))
    return [row[mask].tolist() for row, mask in zip(best, keep, strict=True)]


def _join(labels: Sequence[str], ids: Sequence[int]) -> str:
    return " ".join("".join(labels[i] for i in ids).split())


def ctc_greedy_decode(
    logits: torch.Tensor | np.ndarray,
    lengths: torch.Tensor | np.ndarray | None,
    tokenizer: CtcTokenizer,
) -> list[str]:
    """Greedy CTC transcripts of a batch: ``logits`` (B, T, V), ``lengths`` (B,) → B strings.

    Word delimiters become single spaces; the result has no leading or trailing space.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token, which CTC uses as its blank")
    scores = _as_tensor(logits)
    labels = ctc_labels(tokenizer, scores.shape[-1])
    return [_join(labels, ids) for ids in greedy_ids(scores, lengths, tokenizer.pad_token_id)]


@dataclass(frozen=True)
class LmDecodingOptions:
    """Beam search with a word n-gram LM."""

    backend: Literal["pyctcdecode", "flashlight"] = "pyctcdecode"  # which library searches
    beam_size: int = 50  # hypotheses kept per frame
    alpha: float = 0.5  # LM weight (flashlight: lm_weight)
    beta: float = 1.0  # bonus per word (flashlight: word_score)
    beam_threshold: float = 25.0  # flashlight: drop hypotheses this far below the best
    token_min_logp: float = -5.0  # pyctcdecode: skip tokens less likely than this per frame


class _Backend(Protocol):
    def decode(self, log_probs: np.ndarray) -> str: ...


class _PyCtcDecode:
    def __init__(self, labels: list[str], arpa: Path, options: LmDecodingOptions) -> None:
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError:
            raise ConfigError(f"pyctcdecode LM decoding needs: {_LM_EXTRA}") from None
        self.options = options
        self.decoder = build_ctcdecoder(
            labels, kenlm_model_path=str(arpa), alpha=options.alpha, beta=options.beta
        )

    def decode(self, log_probs: np.ndarray) -> str:
        text = self.decoder.decode(
            log_probs,
            beam_width=self.options.beam_size,
            token_min_logp=self.options.token_min_logp,
        )
        return " ".join(str(text).split())


def _arpa_unigrams(arpa: Path) -> list[str]:
    """The words of an ARPA file's 1-gram section, without ``<s> </s> <unk>``."""
    words: list[str] = []
    section = None
    with open(arpa, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                continue
            if section == "\\1-grams:" and line:
                word = line.split("\t")[1] if "\t" in line else line.split()[1]
                if word not in ("<s>", "</s>", "<unk>"):
                    words.append(word)
    return words


class _Flashlight:
    def __init__(self, tokens: list[str], blank: str, delimiter: str, arpa: Path, o: Any) -> None:
        try:
            from flashlight.lib.text import decoder as fl
            from flashlight.lib.text.decoder.kenlm import KenLM
            from flashlight.lib.text.dictionary import Dictionary, create_word_dict
        except ImportError:
            raise ConfigError("flashlight LM decoding needs: pip install flashlight-text") from None
        self.tokens = Dictionary(tokens)
        known = set(tokens) - {blank, delimiter}
        lexicon = {w: [[*w, delimiter]] for w in _arpa_unigrams(arpa) if w and set(w) <= known}
        lexicon["<unk>"] = [[]]  # present in the word dictionary, never spelled
        self.words = create_word_dict(lexicon)
        lm = KenLM(str(arpa), self.words)
        silence = self.tokens.get_index(delimiter)
        trie = fl.Trie(len(tokens), silence)
        start = lm.start(False)
        for word, spellings in lexicon.items():
            if spellings[0]:
                index = self.words.get_index(word)
                score = lm.score(start, index)[1]
                trie.insert([self.tokens.get_index(t) for t in spellings[0]], index, score)
        trie.smear(fl.SmearingMode.MAX)
        options = fl.LexiconDecoderOptions(
            beam_size=o.beam_size,
            beam_size_token=len(tokens),
            beam_threshold=o.beam_threshold,
            lm_weight=o.alpha,
            word_score=o.beta,
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=fl.CriterionType.CTC,
        )
        blank_id, unk_id = self.tokens.get_index(blank), self.words.get_index("<unk>")
        self.decoder = fl.LexiconDecoder(options, trie, lm, silence, blank_id, unk_id, [], False)

    def decode(self, log_probs: np.ndarray) -> str:
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        frames, vocab = emissions.shape
        results = self.decoder.decode(emissions.ctypes.data, frames, vocab)
        if not results:
            return ""
        return " ".join(self.words.get_entry(w) for w in results[0].words if w >= 0)


class CtcLmDecoder:
    """CTC beam search with a word n-gram LM (ARPA file) over a tokenizer's vocabulary."""

    def __init__(
        self,
        tokenizer: CtcTokenizer,
        arpa_path: str | Path,
        vocab_size: int,
        options: LmDecodingOptions | None = None,
    ) -> None:
        self.options = options or LmDecodingOptions()
        arpa = Path(arpa_path)
        if not arpa.is_file():
            raise DataError(arpa, "no such ARPA language model file")
        self.backend: _Backend
        if self.options.backend == "pyctcdecode":
            labels = ctc_labels(tokenizer, vocab_size, keep_special=True)
            self.backend = _PyCtcDecode(labels, arpa, self.options)
        elif self.options.backend == "flashlight":
            tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(vocab_size)))]
            pad, delimiter = str(tokenizer.pad_token), str(tokenizer.word_delimiter_token)
            self.backend = _Flashlight(tokens, pad, delimiter, arpa, self.options)
        else:
            raise ConfigError(f"unknown LM decoding backend {self.options.backend!r}")

    def decode(
        self, logits: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray | None
    ) -> list[str]:
        """Transcripts of a batch: ``logits`` (B, T, V) (unnormalised), ``lengths`` (B,)."""
        scores = _as_tensor(logits).float()
        log_probs = torch.log_softmax(scores, dim=-1).numpy()
        valid = _lengths(scores, lengths)
        return [self.backend.decode(log_probs[b, :n]) if n else "" for b, n in enumerate(valid)]
