"""Register the ``-A`` architecture with transformers' Auto classes, without importing
transformers: ``import samu_st`` only installs a finder that runs :func:`register` right after
``transformers.models.auto.configuration_auto`` is imported (at once when it already is).

Importing transformers costs seconds; ``samu-st --help`` and light scripts must not pay it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# After modeling_auto has run, the auto package is complete (registering earlier, while it is
# being imported, broke `from transformers import AutoModel`); SpeechEncoderDecoderModel and
# pipeline() import it before they parse a config.
AUTO_CONFIG_MODULE = "transformers.models.auto.modeling_auto"


def register() -> None:
    """Make ``AutoConfig`` know the encoder type of exported ``-A`` folders (imports
    transformers' configuration code, not its models)."""
    from samu_st.export.hf_config import register_config

    register_config()


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        register()


class _AutoConfigFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != AUTO_CONFIG_MODULE:
            return None
        sys.meta_path.remove(self)  # once; the real finders locate the module
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


def install() -> None:
    """Register now if transformers' auto configuration is loaded, else when it is."""
    if AUTO_CONFIG_MODULE in sys.modules:
        register()
    elif not any(isinstance(f, _AutoConfigFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoConfigFinder())
