"""Safe, offline loading of model folders and state dicts.

Every model in samu-st comes from a LOCAL folder: nothing is downloaded, ``trust_remote_code``
stays off, and weights are read with safetensors or ``torch.load(weights_only=True)`` only.
Problems become a :class:`~samu_st.errors.ModelLoadError` that names the folder, the missing
file or the tensor and both shapes, never a silently re-initialised model.

The API, shared by every model builder:

- :func:`require_local_folder` — the path is an existing folder (a hub id gets an "offline" error);
- :func:`require_pretrained_folder` — a Hugging Face folder with ``config.json`` and weights;
- :func:`hf_load_errors` — context manager turning transformers' load exceptions into
  ``ModelLoadError``; use it around ``from_pretrained(..., local_files_only=True)``;
- :func:`quiet_transformers` — silence transformers' load report where it is checked by hand;
- :func:`check_loading_info` — inspect ``from_pretrained(..., output_loading_info=True,
  ignore_mismatched_sizes=True)`` results: mismatched shapes and unexpected missing weights are
  errors that name the tensors;
- :func:`save_state_dict` / :func:`load_state_dict` / :func:`load_into` — safetensors files for
  the parts that are not transformers models (pooling heads, projections, adapters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from samu_st.atomic import atomic_write
from samu_st.errors import ModelLoadError

#: Weight files of a Hugging Face folder, in the order they are preferred.
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def require_local_folder(path: str | Path, what: str = "model") -> Path:
    """Return ``path`` as a ``Path`` if it is an existing folder, else raise ``ModelLoadError``.

    A string that looks like a Hugging Face hub id (``facebook/wav2vec2-xls-r-300m``) gets an
    error that says samu-st works offline and needs a local copy; nothing is downloaded.
    """
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ModelLoadError(f"{folder}: the {what} must be a folder, this is a file")
    text = str(path)
    if _HUB_ID.match(text) and not text.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"{text}: no such local folder. samu-st works offline and never downloads models: "
            f"the {what} must be a local folder (for a hub model, copy or download it first, "
            f"e.g. `huggingface-cli download {text} --local-dir DIR`, and give DIR)"
        )
    raise ModelLoadError(f"{folder}: {what} folder does not exist")


def find_weights_file(folder: str | Path) -> Path:
    """The weights file of a Hugging Face folder (see :data:`WEIGHT_FILES`) or ModelLoadError."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(f"{folder}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")


def require_pretrained_folder(path: str | Path, what: str = "model") -> Path:
    """A local Hugging Face model folder with a ``config.json`` and a weights file."""
    folder = require_local_folder(path, what)
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json, so this is not a {what} folder")
    find_weights_file(folder)
    return folder


@contextmanager
def hf_load_errors(path: str | Path, what: str = "model") -> Iterator[None]:
    """Turn the exceptions transformers raises while loading into ``ModelLoadError``."""
    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{path}: cannot load the {what}: {first}") from error


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings (e.g. a load report whose findings are checked by hand)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def check_loading_info(
    info: Mapping[str, Any],
    path: str | Path,
    *,
    allow_missing: Callable[[str], bool] = lambda key: False,
) -> None:
    """Raise ``ModelLoadError`` for a ``from_pretrained`` load that re-initialised weights.

    Args:
        info: the dict returned with ``output_loading_info=True`` (keys ``missing_keys``,
            ``mismatched_keys`` as ``(key, checkpoint_shape, model_shape)``, ``error_msgs``).
            Load with ``ignore_mismatched_sizes=True`` so that this function, not a log line,
            reports the shapes.
        path: the folder, for the message.
        allow_missing: True for the keys that may legitimately be fresh (a new head).
    """
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda item: str(item))
    if mismatched:
        key, ckpt, model = mismatched[0]
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise ModelLoadError(
            f"{path}: tensor {key} has shape {tuple(ckpt)} in the checkpoint but {tuple(model)} "
            f"in the model{more}; the checkpoint does not match this architecture"
        )
    missing = sorted(k for k in info.get("missing_keys") or () if not allow_missing(k))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        raise ModelLoadError(f"{path}: weights missing from the checkpoint: {shown}")
    errors = list(info.get("error_msgs") or ())
    if errors:
        raise ModelLoadError(f"{path}: {errors[0]}")


def load_pretrained_checked(
    cls: Any,
    folder: str | Path,
    what: str = "model",
    *,
    allow_missing: Callable[[str], bool] = lambda key: False,
    **kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """``cls.from_pretrained(folder)`` offline and safely, every re-initialised weight an error.

    ``ignore_mismatched_sizes=True`` makes transformers report a wrong shape in the loading
    info instead of raising an error that names no tensor; :func:`check_loading_info` then
    raises one that does. Returns the model and the loading info (for extra checks).
    """
    path = require_pretrained_folder(folder, what)
    with hf_load_errors(path, what), quiet_transformers():
        loaded: Any = cls.from_pretrained(
            str(path),
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    model, info = loaded
    check_loading_info(info, path, allow_missing=allow_missing)
    return model, info


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors to a safetensors file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}),
                 point="safetensors")  # fmt: skip


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file, or a torch file with ``weights_only=True``, onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(f"{path}: cannot read the weights: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a state dict of tensors")
    return state


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    strict: bool = True,
) -> None:
    """Raise ``ModelLoadError`` naming the first tensor whose key or shape does not match."""
    for key, value in expected.items():
        if key not in state:
            if strict:
                raise ModelLoadError(f"{path}: tensor {key} is missing")
            continue
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelLoadError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)} in the file but "
                f"{tuple(value.shape)} in the model"
            )
    extra = sorted(set(state) - set(expected))
    if strict and extra:
        raise ModelLoadError(f"{path}: unexpected tensor {extra[0]} ({len(extra)} unexpected)")


def load_into(
    module: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    keys: Iterable[str] | None = None,
) -> None:
    """Load a weights file into ``module`` after checking every key and shape.

    Args:
        module: the model to fill in place.
        path: a ``.safetensors`` file (or a torch file, read with ``weights_only=True``).
        strict: every tensor of the module must be in the file and nothing else.
        keys: restrict the check and load to these keys of ``module.state_dict()``.
    """
    state = load_state_dict(path)
    expected = module.state_dict()
    if keys is not None:
        wanted = set(keys)
        expected = {k: v for k, v in expected.items() if k in wanted}
        state = {k: v for k, v in state.items() if k in wanted}
    check_state_dict(state, expected, path, strict=strict)
    module.load_state_dict(state, strict=False)


def read_checkpoint_tensors(
    folder: str | Path, select: Callable[[str], bool] = lambda key: True
) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face folder's weights whose key ``select`` accepts.

    Reads ``model.safetensors``, ``pytorch_model.bin`` (``weights_only=True``) or their sharded
    ``*.index.json`` forms; only the shards that hold a selected key are opened.
    """
    weights = find_weights_file(folder)
    if weights.name.endswith(".index.json"):
        try:
            weight_map = json.loads(weights.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"{weights}: not a valid weights index: {error}") from error
        shards = sorted({weights.parent / f for k, f in weight_map.items() if select(k)})
    else:
        shards = [weights]
    selected: dict[str, torch.Tensor] = {}
    for shard in shards:
        if shard.suffix == ".safetensors":
            try:
                with safe_open(str(shard), framework="pt", device="cpu") as handle:
                    for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        if select(key):
                            selected[key] = handle.get_tensor(key)
            except OSError as error:
                raise ModelLoadError(f"{shard}: cannot read the weights: {error}") from error
        else:
            selected.update({k: v for k, v in load_state_dict(shard).items() if select(k)})
    return selected
