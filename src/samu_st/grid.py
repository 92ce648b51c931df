"""The paper's experiment grid: which systems exist, what each is built from, and which
systems each of the paper's tables compares.

A *system* is one row of a table: an encoder initialisation (step 1 only, step 2 SAMU
distillation, or CTC fine-tuning instead of step 2), an encoder fine-tuning mode in step 3
(``A``: frozen encoder + bottleneck adapters; ``F``: full fine-tuning), and the languages step 3
trains on (all 21, or only the 4 high-resource ones for zero-shot). The cascade is CTC ASR
followed by MBART text translation. The ``whisper`` row is a Whisper checkpoint's X→EN
translate task, zero-shot (trained elsewhere; :mod:`samu_st.whisper_eval`): the system a
researcher would use instead, built only when ``pipeline.whisper.model`` names a checkpoint.
``whisper-samu-A`` is the paper's method on that checkpoint's encoder (``family`` whisper): no
step 1, SAMU distillation of Whisper's encoder in step 2, adapters + LNA-D in step 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from samu_st.languages import GROUPS

EncoderInit = Literal["ssl", "samu", "ctc"]
# Encoder family of steps 2-3: wav2vec2 (XLS-R: step 1 or pipeline.encoder_pretrained) or
# whisper (the encoder of the pipeline.whisper.model folder)
GridFamily = Literal["wav2vec2", "whisper"]


@dataclass(frozen=True)
class System:
    """One row of the paper's tables."""

    name: str  # name in tables and folder name, e.g. "samu-xlsr-A"
    # end-to-end speech translator, ASR → MT, or a Whisper checkpoint evaluated as it is
    kind: Literal["e2e", "cascade", "whisper"]
    encoder_init: EncoderInit = "ssl"  # which encoder step 3 starts from (unused by whisper)
    encoder_mode: Literal["adapters", "full"] = "full"  # step-3 encoder fine-tuning (A / F)
    zero_shot: bool = False  # step 3 sees only the high-resource languages
    family: GridFamily = "wav2vec2"  # which encoder steps 2-3 start from


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
        System("whisper", "whisper"),
        System("whisper-samu-A", "e2e", "samu", "adapters", family="whisper"),
    )
}
# The rows the pipeline builds by default: every XLS-R system trained here (the whisper row is
# added when a Whisper checkpoint is configured, see samu_st.pipeline.WhisperSystemConfig;
# whisper-samu-A is built when listed, and needs that checkpoint too).
TRAINED_SYSTEMS: tuple[str, ...] = tuple(
    n for n, s in SYSTEMS.items() if s.kind != "whisper" and s.family == "wav2vec2"
)
# Systems that read pipeline.whisper.model
WHISPER_SYSTEMS: tuple[str, ...] = tuple(
    n for n, s in SYSTEMS.items() if s.kind == "whisper" or s.family == "whisper"
)

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
    "whisper": (
        "Beside Whisper: zero-shot, and its encoder through SAMU + adapters",
        ("samu-xlsr-A", "whisper-samu-A", "whisper"),
    ),
}
PAPER_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t != "whisper")  # the default

HIGH_RESOURCE: tuple[str, ...] = GROUPS["high"]


def systems_for(names: tuple[str, ...]) -> list[System]:
    """The systems named, in grid order; unknown names are a ``KeyError`` listing valid ones."""
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise KeyError(f"unknown system(s) {unknown}; valid: {sorted(SYSTEMS)}")
    return [s for n, s in SYSTEMS.items() if n in names]


def required_encoders(systems: list[System]) -> set[EncoderInit]:
    """Encoder initialisations of XLS-R the systems need (each is trained once and shared;
    Whisper-family systems have their own step 2, see samu_st.pipeline_whisper)."""
    return {s.encoder_init for s in systems if s.kind != "whisper" and s.family == "wav2vec2"}


def system_fingerprint(system: System) -> dict[str, object]:
    """The system as hashed into its stages' keys (``family`` only when it is not the default,
    so that the keys of the XLS-R systems, and the runs finished with them, stay valid)."""
    data = asdict(system)
    if system.family == "wav2vec2":
        del data["family"]
    return data
