"""Spelling numbers for mini-CoVoST: English target words and source-language transcripts.

The source transcript is written with num2words where it spells the language the way espeak-ng
says it; elsewhere the transcript is the digit string espeak-ng was given. The spelling of each
language was checked against espeak-ng's reading (IPA of the digits vs IPA of the num2words
words, numbers 0-999, num2words 0.5.14, espeak-ng 1.51):

- fr de es ca fa it ru pt nl tr ar sv lv sl id ja: same words (differences are only espeak's
  letter-to-sound rules; ja is written in kanji, which espeak-ng reads as a Japanese number);
- cy: num2words uses the traditional vigesimal numerals ("un ar hugain" = 21) while espeak-ng
  says the decimal ones ("dau ddeg un"), so Welsh transcripts are digits;
- zh-CN (num2words has no Chinese converter), et, ta (none either): digits.

espeak-ng is given the digit string, except for Arabic: espeak-ng 1.51 reads Arabic numbers
non-deterministically (an uninitialised read inserts random phonemes such as ``q``, ``Q^``,
``Z;`` or drops endings, differently in each process), so Arabic numbers are spoken from
phonemes composed here (:func:`arabic_phonemes`), in the order num2words writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from num2words import num2words

from samu_st.languages import Language

# Languages whose num2words spelling is a different sentence from what espeak-ng says.
SPELLING_MISMATCH: dict[str, str] = {
    "cy": "num2words writes the traditional vigesimal numerals ('un ar hugain' = 21) but "
    "espeak-ng says the decimal ones ('dau ddeg un')",
}


@dataclass(frozen=True)
class Spelling:
    """How a language's source transcripts are written."""

    language: str  # CoVoST-2 code
    num2words_lang: str | None  # num2words code used; None → the digit string
    note: str  # why digits are used ("" when num2words spells the language)

    @property
    def method(self) -> str:
        return f"num2words:{self.num2words_lang}" if self.num2words_lang else "digits"

    def spell(self, number: int) -> str:
        """The number as written in the source language (``number`` >= 0)."""
        if self.num2words_lang is None:
            return str(number)
        return str(num2words(number, lang=self.num2words_lang))


# espeak-ng Arabic phoneme mnemonics (A- = ʕ, S = ʃ, T = θ, H = ħ, ? = ʔ, ' = stress).
_AR_UNITS = ("s[ifR", "w'a:Hid", "?iTn'a:n", "Tal'a:Ta", "?'aRbaA-a", "x'amsa", "s'it:a",
             "s'abA-a", "Tam'a:nija", "t'isA-a")  # fmt: skip
_AR_TEEN_STEMS = ("", "?aH'ada", "?iTn'a:", "Tal'a:Tata", "?arb'aA-ata", "x'amsata",
                  "s'it:ata", "s'abA-ata", "Tam'a:nijata", "t'isA-ata")  # fmt: skip
_AR_TENS = ("", "", "A-iSR'u:n", "Tala:T'u:n", "?aRbaA-'u:n", "xams'u:n", "sit:'u:n",
            "sabA-'u:n", "Tama:n'u:n", "tisA-'u:n")  # fmt: skip
_AR_HUNDREDS = ("", "m'i?a", "mi?at'a:n", "Tal'a:Tumi?a", "?'aRbaA-umi?a", "x'amsumi?a",
                "s'it:umi?a", "s'abA-umi?a", "Tam'a:numi?a", "t'isA-umi?a")  # fmt: skip


def arabic_phonemes(number: int) -> str:
    """espeak-ng phonemes of ``number`` (0-999) in Arabic: 23 → ``Tal'a:Ta wa A-iSR'u:n``."""
    if not 0 <= number <= 999:
        raise ValueError(f"Arabic phonemes are defined for 0-999, got {number}")
    hundreds, rest = divmod(number, 100)
    tens, units = divmod(rest, 10)
    if rest < 10:
        low = _AR_UNITS[rest]
    elif rest == 10:
        low = "A-'aSara"
    elif rest < 20:
        low = f"{_AR_TEEN_STEMS[units]} A-'aSar"
    else:
        low = _AR_TENS[tens] if units == 0 else f"{_AR_UNITS[units]} wa {_AR_TENS[tens]}"
    parts = ([_AR_HUNDREDS[hundreds]] if hundreds else []) + ([low] if rest or not number else [])
    return " wa ".join(parts)


def espeak_text(language: str, number: int) -> str:
    """What espeak-ng is asked to say for ``number`` in ``language`` (a CoVoST-2 code)."""
    if language == "ar":
        return f"[[{arabic_phonemes(number)}]]"
    return str(number)


def english_words(number: int) -> str:
    """English target words: 42 → "forty-two", 123 → "one hundred and twenty-three"."""
    return str(num2words(number, lang="en"))


def source_spelling(lang: Language) -> Spelling:
    """Decide, for the installed num2words, how ``lang``'s transcripts are written."""
    if lang.code in SPELLING_MISMATCH:
        return Spelling(lang.code, None, SPELLING_MISMATCH[lang.code])
    if lang.num2words_lang is None:
        return Spelling(lang.code, None, f"num2words cannot spell {lang.name}")
    try:
        num2words(21, lang=lang.num2words_lang)
    except (NotImplementedError, KeyError, ValueError) as err:
        note = f"num2words has no converter for lang={lang.num2words_lang!r} ({type(err).__name__})"
        return Spelling(lang.code, None, note)
    return Spelling(lang.code, lang.num2words_lang, "")
