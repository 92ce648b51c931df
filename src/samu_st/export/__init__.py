"""Hugging Face export of step-3 translators (:func:`export_translator`) and the registration
of the ``-A`` encoder architecture with transformers (:mod:`.hooks`).

Importing this package is light; the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ExportOptions": "samu_st.export.folder",
    "export_translator": "samu_st.export.folder",
    "write_model_card": "samu_st.export.card",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
