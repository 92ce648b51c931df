"""CoVoST-2 X→EN source languages, their resource groups and the codes other tools use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResourceGroup = Literal["high", "mid", "low"]


@dataclass(frozen=True)
class Language:
    """One CoVoST-2 source language."""

    code: str  # CoVoST-2 / Common Voice code, e.g. "zh-CN"
    name: str
    group: ResourceGroup  # the paper's grouping by hours of training data (§3)
    train_hours: float  # CoVoST-2 X→EN train hours (Wang et al. 2020, Table 2)
    espeak_voice: str | None  # espeak-ng voice that speaks it; None where espeak-ng has none
    num2words_lang: str | None  # num2words language code, None where it cannot spell numbers
    mbart50_code: str | None  # MBART-50 language token; None where MBART-50 lacks the language


LANGUAGES: tuple[Language, ...] = (
    Language("fr", "French", "high", 264.0, "fr", "fr", "fr_XX"),
    Language("de", "German", "high", 184.0, "de", "de", "de_DE"),
    Language("es", "Spanish", "high", 113.0, "es", "es", "es_XX"),
    Language("ca", "Catalan", "high", 136.0, "ca", "ca", None),
    Language("fa", "Persian", "mid", 49.0, "fa", "fa", "fa_IR"),
    Language("it", "Italian", "mid", 44.0, "it", "it", "it_IT"),
    Language("ru", "Russian", "mid", 18.0, "ru", "ru", "ru_RU"),
    Language("pt", "Portuguese", "mid", 10.0, "pt", "pt", "pt_XX"),
    Language("zh-CN", "Chinese", "mid", 10.0, "cmn", None, "zh_CN"),
    Language("nl", "Dutch", "low", 7.0, "nl", "nl", "nl_XX"),
    Language("tr", "Turkish", "low", 4.0, "tr", "tr", "tr_TR"),
    Language("et", "Estonian", "low", 3.0, "et", None, "et_EE"),
    Language("mn", "Mongolian", "low", 3.0, None, None, "mn_MN"),
    Language("ar", "Arabic", "low", 2.0, "ar", "ar", "ar_AR"),
    Language("sv-SE", "Swedish", "low", 2.0, "sv", "sv", "sv_SE"),
    Language("lv", "Latvian", "low", 2.0, "lv", "lv", "lv_LV"),
    Language("sl", "Slovenian", "low", 2.0, "sl", "sl", "sl_SI"),
    Language("ta", "Tamil", "low", 2.0, "ta", None, "ta_IN"),
    Language("cy", "Welsh", "low", 2.0, "cy", "cy", None),
    Language("ja", "Japanese", "low", 1.0, "ja", "ja", "ja_XX"),
    Language("id", "Indonesian", "low", 1.0, "id", "id", "id_ID"),
)

BY_CODE: dict[str, Language] = {lang.code: lang for lang in LANGUAGES}
GROUPS: dict[ResourceGroup, tuple[str, ...]] = {
    g: tuple(lang.code for lang in LANGUAGES if lang.group == g) for g in ("high", "mid", "low")
}
COVOST_CODES: tuple[str, ...] = tuple(lang.code for lang in LANGUAGES)


def get_language(code: str) -> Language:
    """The CoVoST-2 language for ``code``; a clear ``KeyError`` listing valid codes otherwise."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise KeyError(
            f"unknown language code {code!r}; CoVoST-2 source languages are: "
            + " ".join(COVOST_CODES)
        ) from None


def is_known_language(code: str) -> bool:
    """Whether ``code`` is one of CoVoST-2's 21 source languages (or English, the target)."""
    return code in BY_CODE or code == "en"
