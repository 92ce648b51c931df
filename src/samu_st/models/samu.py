"""The SAMU-XLS-R speech branch: encoder -> attention pooling -> projection -> utterance embedding.

Saved as a folder::

    samu_config.json       dimensions and encoder mode (written last: its presence marks a
                           complete save)
    head.safetensors       pooling query and projection
    encoder/               the encoder in its family's Hugging Face format

``encoder/`` loads with its family's ``from_pretrained`` (``Wav2Vec2Model``, ``HubertModel``,
``WavLMModel``, ``Wav2Vec2BertModel``, ``WhisperEncoder``) and is what step 3 uses as its
encoder: ``EncoderConfig(pretrained="<folder>/encoder", family=...)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from samu_st.errors import ModelLoadError
from samu_st.models.encoder import EncoderConfig, EncoderMode, SpeechEncoder, load_encoder
from samu_st.models.loading import load_into, require_local_folder, save_state_dict
from samu_st.models.pooling import AttentionPooling

CONFIG_FILE = "samu_config.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
_FORMAT = "samu-st/samu-model"


class SamuModel(nn.Module):
    """Speech branch of semantic distillation: waveforms -> (B, D_teacher) embeddings.

    Args:
        encoder: the speech encoder (its mode decides what trains in it).
        out_dim: the teacher's embedding size; a Linear projection maps the encoder's D to it
            when they differ (identity otherwise).
        pooling: the pooling module; by default a fresh ``AttentionPooling(D)``.
    """

    def __init__(
        self,
        encoder: SpeechEncoder,
        out_dim: int | None = None,
        pooling: AttentionPooling | None = None,
    ) -> None:
        super().__init__()
        dim = encoder.hidden_size
        self.encoder = encoder
        self.pooling = pooling if pooling is not None else AttentionPooling(dim)
        self.out_dim = out_dim if out_dim is not None else dim
        self.projection: nn.Module = (
            nn.Linear(dim, self.out_dim) if self.out_dim != dim else nn.Identity()
        )

    @classmethod
    def from_config(cls, cfg: EncoderConfig, out_dim: int | None = None) -> SamuModel:
        """A SAMU model around ``SpeechEncoder.from_config(cfg)`` with a fresh head."""
        return cls(SpeechEncoder.from_config(cfg), out_dim)

    def forward(self, input_values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms with (B,) sample lengths -> (B, out_dim) utterance embeddings."""
        encoded = self.encoder(input_values, lengths)
        return self.projection(self.pooling(encoded.hidden, encoded.mask))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group: ``encoder`` and ``head`` (pooling +
        projection). Frozen parameters are left out; a group may be empty."""
        head = [*self.pooling.parameters(), *self.projection.parameters()]
        return {
            "encoder": [p for p in self.encoder.parameters() if p.requires_grad],
            "head": [p for p in head if p.requires_grad],
        }

    def _head_state(self) -> dict[str, torch.Tensor]:
        state = {f"pooling.{k}": v for k, v in self.pooling.state_dict().items()}
        state.update({f"projection.{k}": v for k, v in self.projection.state_dict().items()})
        return state

    def save(self, folder: str | Path) -> None:
        """Write the model as a folder (see the module docstring)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).unlink(missing_ok=True)
        self.encoder.save(folder / ENCODER_DIR)
        save_state_dict(self._head_state(), folder / HEAD_FILE)
        config = {
            "format": _FORMAT,
            "version": 1,
            "hidden_size": self.encoder.hidden_size,
            "out_dim": self.out_dim,
            "encoder_mode": self.encoder.mode,
            "encoder_family": self.encoder.family,
            "train_feature_encoder": self.encoder.train_feature_encoder,
        }
        tmp = folder / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / CONFIG_FILE)

    @classmethod
    def load(
        cls,
        folder: str | Path,
        mode: EncoderMode | None = None,
        encoder_cfg: EncoderConfig | None = None,
    ) -> SamuModel:
        """Load a folder written by :meth:`save`.

        Args:
            folder: the model folder.
            mode: encoder mode after loading (default: the saved one).
            encoder_cfg: dropout / masking / checkpointing overrides for the encoder (its
                ``pretrained`` and ``size`` are ignored; ``mode`` is used if ``mode`` is None).
        """
        folder = require_local_folder(folder, "SAMU model")
        config = _read_config(folder / CONFIG_FILE)
        model = load_encoder(folder / ENCODER_DIR, encoder_cfg)
        if encoder_cfg is not None and encoder_cfg.gradient_checkpointing:
            model.activation_checkpointing_enable()
        if mode is None:
            mode = encoder_cfg.mode if encoder_cfg is not None else config["encoder_mode"]
        encoder = SpeechEncoder(
            model, mode, train_feature_encoder=bool(config.get("train_feature_encoder", False))
        )
        recorded = config.get("encoder_family")  # absent in folders written before issue #18
        if recorded is not None and recorded != encoder.family:
            raise ModelLoadError(
                f"{folder / ENCODER_DIR}: a {encoder.family} encoder but {CONFIG_FILE} says "
                f"{recorded}; the folder was assembled from two models"
            )
        if encoder.hidden_size != config["hidden_size"]:
            raise ModelLoadError(
                f"{folder / ENCODER_DIR}: encoder size {encoder.hidden_size} but "
                f"{CONFIG_FILE} says {config['hidden_size']}"
            )
        samu = cls(encoder, int(config["out_dim"]))
        head = nn.ModuleDict({"pooling": samu.pooling, "projection": samu.projection})
        load_into(head, folder / HEAD_FILE)
        return samu


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing, so this is not a (complete) SAMU model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise ModelLoadError(f"{path}: not a samu-st SAMU model config (format {_FORMAT!r})")
    for key in ("hidden_size", "out_dim", "encoder_mode"):
        if key not in config:
            raise ModelLoadError(f"{path}: missing key {key!r}")
    if config["encoder_mode"] not in ("full", "adapters", "frozen"):
        raise ModelLoadError(f"{path}: unknown encoder_mode {config['encoder_mode']!r}")
    return config
