"""The CTC model (the ``ctc-xlsr`` baseline and the notebook recipe) for the wrapped encoder
families: :class:`FamilyForCTC` = :class:`~samu_st.models.family_model.FamilySpeechModel` +
dropout + a linear head over the character vocabulary, with the interface of
``Wav2Vec2ForCTC`` that samu-st uses (``forward(input_values, attention_mask).logits``,
``_get_feat_extract_output_lengths``, ``config.vocab_size`` / ``pad_token_id``).

It is one model for every family (Whisper has no CTC class in transformers, and w2v-BERT's
takes fbank features): its folder is written by ``save_pretrained`` (the family's config with
``samu_ctc_model: true`` and the head's ``vocab_size`` / ``pad_token_id``; weights
``encoder.model.*`` and ``lm_head.*``) and read back by :func:`load_family_ctc`. Its
``encoder/`` export (``train-ctc``) is a plain folder of the family, as every encoder folder.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from samu_st.errors import ModelLoadError
from samu_st.models.adapters import CONFIG_KEY, add_bottleneck_adapters
from samu_st.models.encoder_families import family_of_model_type
from samu_st.models.encoder_presets import WAV2VEC2_OVERRIDES
from samu_st.models.family_model import FamilySpeechModel
from samu_st.models.loading import find_weights_file, load_into, require_pretrained_folder

if TYPE_CHECKING:
    from samu_st.models.encoder import EncoderConfig

#: Config attribute that marks a samu-st CTC folder of a wrapped family.
CTC_KEY = "samu_ctc_model"


class FamilyForCTC(PreTrainedModel):
    """A wrapped family encoder with a CTC head (see the module docstring).

    Args:
        encoder: the wrapped encoder (its config gets the head's settings).
        vocab_size: output classes; pad_token_id: the blank; final_dropout: before the head.
    """

    main_input_name = "input_values"
    base_model_prefix = "encoder"
    _supports_sdpa = True

    def __init__(
        self,
        encoder: FamilySpeechModel,
        vocab_size: int,
        pad_token_id: int,
        final_dropout: float = 0.0,
    ) -> None:
        # its own copy: the encoder's config (and its `encoder/` export) stays a plain one
        config = copy.deepcopy(encoder.config)
        config.vocab_size = vocab_size
        config.pad_token_id = pad_token_id
        config.final_dropout = final_dropout
        setattr(config, CTC_KEY, True)
        super().__init__(config)
        self.encoder = encoder
        self.dropout = nn.Dropout(final_dropout)
        self.lm_head = nn.Linear(int(config.hidden_size), vocab_size)

    @property
    def base_model(self) -> nn.Module:
        return self.encoder

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutput:
        """(B, S) waveforms, (B, S) sample mask → ``logits`` (B, T, V) (the loss is the
        caller's: :class:`samu_st.steps.tasks_ctc.CtcTask`)."""
        hidden = self.encoder(input_values, attention_mask=attention_mask).last_hidden_state
        return CausalLMOutput(logits=self.lm_head(self.dropout(hidden)))

    def _get_feat_extract_output_lengths(
        self, input_lengths: torch.Tensor | int, add_adapter: bool | None = None
    ) -> torch.Tensor:
        """(B,) samples → (B,) frames of the logits."""
        return self.encoder.frame_lengths(torch.as_tensor(input_lengths))


def load_family_ctc(folder: str | Path, cfg: EncoderConfig | None = None) -> FamilyForCTC:
    """A :class:`FamilyForCTC` folder written by ``save_pretrained``: same weights, every tensor
    checked (ModelLoadError naming the folder otherwise). ``cfg``'s dropout / masking
    overrides are applied to the encoder's config, as for a wav2vec2 CTC folder."""
    path = require_pretrained_folder(folder, "CTC model")
    config = _read_config(path)
    family = family_of_model_type(config.model_type)
    assert family is not None
    encoder_config = copy.deepcopy(config)
    delattr(encoder_config, CTC_KEY)
    if cfg is not None:
        family.apply_overrides(encoder_config, {n: getattr(cfg, n) for n in WAV2VEC2_OVERRIDES})
    inner = family.model_class(encoder_config)
    spec = getattr(config, CONFIG_KEY, None)
    if spec:
        add_bottleneck_adapters(inner, spec["ratio"], spec["activation"], spec["layer_norm"])
    model = FamilyForCTC(
        FamilySpeechModel(inner),
        int(config.vocab_size),
        int(config.pad_token_id),
        float(getattr(config, "final_dropout", 0.0)),
    )
    load_into(model, find_weights_file(path))
    return model


def _read_config(path: Path) -> PretrainedConfig:
    data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    family = family_of_model_type(data.get("model_type"))
    if family is None or family.name == "wav2vec2" or not data.get(CTC_KEY):
        raise ModelLoadError(f"{path}: not a samu-st CTC folder of a HuBERT/WavLM/w2v-BERT/Whisper")
    config = family.config_class.from_pretrained(str(path), local_files_only=True)
    config._attn_implementation = family.attn_implementation
    return config


def is_family_ctc_folder(folder: str | Path) -> bool:
    """True for a folder written by :class:`FamilyForCTC` (config ``samu_ctc_model``)."""
    config = Path(folder) / "config.json"
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get(CTC_KEY))
    except (OSError, ValueError, AttributeError):
        return False
