"""Build and load the encoder of a wrapped family (HuBERT, WavLM, w2v-BERT, Whisper) as a
:class:`~samu_st.models.family_model.FamilySpeechModel`.

- a preset: the family's transformers class on :meth:`Family.config` (random weights);
- a local folder of the family's own format: ``HubertModel`` / ``WavLMModel`` /
  ``Wav2Vec2BertModel`` folders (their ``*ForCTC`` / ``*ForPreTraining`` folders too: heads are
  dropped) with ``from_pretrained``, offline and shape-checked; for Whisper, a
  ``WhisperForConditionalGeneration`` or ``WhisperModel`` folder (what users have) or the
  ``WhisperEncoder`` folder samu-st saves: only the encoder's tensors are read
  (``model.encoder.*`` / ``encoder.*`` / bare keys), every one checked;
- bottleneck adapters recorded in the folder's config are restored.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from samu_st.errors import ModelLoadError
from samu_st.models.adapters import CONFIG_KEY, add_bottleneck_adapters
from samu_st.models.encoder import (
    EncoderConfig,
    _apply_overrides,
    load_wav2vec2_model,
    read_encoder_config,
)
from samu_st.models.encoder_families import get_family
from samu_st.models.family_model import WHISPER_INPUT_KEY, FamilySpeechModel
from samu_st.models.loading import (
    check_state_dict,
    hf_load_errors,
    read_checkpoint_tensors,
    require_pretrained_folder,
)

_WHISPER_PREFIXES = ("model.encoder.", "encoder.", "")


def build_family_model(cfg: EncoderConfig) -> FamilySpeechModel:
    """The wrapped model of ``cfg.family``: from ``cfg.pretrained`` or the ``cfg.size`` preset;
    gradient checkpointing if asked."""
    if cfg.pretrained is not None:
        wrapped = load_family_model(cfg.pretrained, cfg)
    else:
        family = get_family(cfg.family)
        config = family.config(cfg.size)
        _apply_overrides(config, cfg)
        wrapped = wrap(family.model_class(config), cfg)
    if cfg.gradient_checkpointing:
        wrapped.activation_checkpointing_enable()
    return wrapped


def wrap(model: PreTrainedModel, cfg: EncoderConfig | None = None) -> FamilySpeechModel:
    """``model`` in a :class:`FamilySpeechModel`; ``cfg.whisper_input`` recorded for Whisper."""
    if cfg is not None and cfg.family == "whisper":
        setattr(model.config, WHISPER_INPUT_KEY, cfg.whisper_input)
    return FamilySpeechModel(model)


def load_family_model(folder: str, cfg: EncoderConfig | None = None) -> FamilySpeechModel:
    """The wrapped encoder saved in ``folder`` (module docstring), ``cfg``'s overrides
    applied. Raises ``ModelLoadError`` for a folder of another family, a missing or misshapen
    tensor."""
    path = require_pretrained_folder(folder, "speech encoder")
    family_name = cfg.family if cfg is not None else None
    if family_name is None:
        from samu_st.models.encoder import folder_family

        family_name = folder_family(path)
    if family_name == "whisper":
        return wrap(_load_whisper_encoder(path, cfg), cfg)
    family = get_family(family_name)
    model = load_wav2vec2_model(family.model_class, str(path), cfg, family=family.name)
    return wrap(model, cfg)


def _load_whisper_encoder(path: Path, cfg: EncoderConfig | None) -> WhisperEncoder:
    config = read_encoder_config(path, "whisper")
    if cfg is not None:
        _apply_overrides(config, cfg)
    config._attn_implementation = "sdpa"
    with hf_load_errors(path, "speech encoder"):
        encoder = WhisperEncoder(config)
    spec = getattr(config, CONFIG_KEY, None)
    if spec:
        add_bottleneck_adapters(encoder, spec["ratio"], spec["activation"], spec["layer_norm"])
    expected = encoder.state_dict()
    prefix = _whisper_prefix(path)
    tensors = read_checkpoint_tensors(path, lambda key: key.startswith(prefix))
    state = {key[len(prefix) :]: value for key, value in tensors.items()}
    if prefix == "":
        state = {k: v for k, v in state.items() if not k.startswith(("decoder.", "model."))}
    check_state_dict(state, expected, path)
    encoder.load_state_dict(state, strict=True)
    return encoder


def _whisper_prefix(path: Path) -> str:
    """Where the encoder's tensors are in a Whisper folder's weights."""
    for prefix in _WHISPER_PREFIXES:
        probe = f"{prefix}conv1.weight"
        if read_checkpoint_tensors(path, probe.__eq__):
            return prefix
    raise ModelLoadError(f"{path}: no Whisper encoder weights (no conv1.weight under any prefix)")
