"""The paper's experiment grid: which systems exist, what each is built from, and which
systems each of the paper's tables compares.

A *system* is one row of a table: an encoder initialisation (step 1 only, step 2 SAMU
distillation, or CTC fine-tuning instead of step 2), an encoder fine-tuning mode in step 3
(``A``: frozen encoder + bottleneck adapters; ``F``: full fine-tuning), and the languages step 3
trains on (all 21, or only the 4 high-resource ones for zero-shot). The cascade is CTC ASR
followed by MBART text translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from samu_st.languages import GROUPS

EncoderInit = Literal["ssl", "samu", "ctc"]


@dataclass(frozen=True)
class System:
    """One row of the paper's tables."""

    name: str  # name in tables and folder name, e.g. "samu-xlsr-A"
    kind: Literal["e2e", "cascade"]  # end-to-end speech translator, or ASR → MT
    encoder_init: EncoderInit = "ssl"  # which encoder step 3 starts from
    encoder_mode: Literal["adapters", "full"] = "full"  # step-3 encoder fine-tuning (A / F)
    zero_shot: bool = False  # step 3 sees only the high-resource languages


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("xlsr-F", "e2e", "ssl", "full"),
        System("xlsr-A", "e2e", "ssl", "adapters"),
        System("samu-xlsr-F", "e2e", "samu", "full"),
        System("samu-xlsr-A", "e2e", "samu", "adapters"),
        System("ctc-xlsr-F", "e2e", "ctc", "full"),
        System("cascade", "cascade", "ctc"),
        System("zs-xlsr-F", "e2e", "ssl", "full", zero_shot=True),
        System("zs-samu-xlsr-A", "e2e", "samu", "adapters", zero_shot=True),
    )
}

# The paper's tables (ICASSP 2024, §3) as lists of system names.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "table2": ("Table 2: xlsr vs samu-xlsr", ("xlsr-F", "samu-xlsr-A")),
    "table4": ("Table 4: cascade vs end-to-end", ("cascade", "samu-xlsr-A")),
    "table5": ("Table 5: ASR fine-tuning vs semantic KD", ("xlsr-F", "ctc-xlsr-F", "samu-xlsr-A")),
    "table6": (
        "Table 6: adapters vs full encoder fine-tuning",
        ("xlsr-F", "xlsr-A", "samu-xlsr-F", "samu-xlsr-A"),
    ),
    "table7": (
        "Table 7: zero-shot (step 3 on high-resource only)",
        ("zs-xlsr-F", "zs-samu-xlsr-A"),
    ),
}

HIGH_RESOURCE: tuple[str, ...] = GROUPS["high"]


def systems_for(names: tuple[str, ...]) -> list[System]:
    """The systems named, in grid order; unknown names are a ``KeyError`` listing valid ones."""
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise KeyError(f"unknown system(s) {unknown}; valid: {sorted(SYSTEMS)}")
    return [s for n, s in SYSTEMS.items() if n in names]


def required_encoders(systems: list[System]) -> set[EncoderInit]:
    """Encoder initialisations the systems need (each is trained once and shared)."""
    return {s.encoder_init for s in systems}
