"""samu-st: cross-lingual transfer for low-resource speech translation and recognition."""

from __future__ import annotations

from typing import Any

from samu_st.export import hooks as _hooks

__version__ = "0.1.0"
__all__ = ["SpeechTranslator", "__version__"]

# Exported -A folders name an encoder type only samu_st knows; this makes transformers' Auto
# classes know it too, once transformers itself is imported (nothing heavy is imported here).
_hooks.install()


def __getattr__(name: str) -> Any:
    if name == "SpeechTranslator":  # imports torch and transformers: only when asked for
        from samu_st.speech_translator import SpeechTranslator

        return SpeechTranslator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
