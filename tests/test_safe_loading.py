"""Loading is safe: a source scan for unsafe loading calls, hub ids that fail at once without a
network attempt through every loader, and tampered safetensors files that name the tensor.

Already covered elsewhere (not repeated): shape mismatches from an edited config.json
(test_encoder.py), a misshaped SAMU head and decoder tensor (test_samu.py, test_decoder.py),
pickles refused by ``load_state_dict`` (test_encoder.py), checkpoint tensors of the wrong shape
(test_checkpoint.py).
"""

from __future__ import annotations

import ast
import json
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from num2words import num2words
from safetensors.torch import load_file, save_file

from samu_st.errors import ModelLoadError
from samu_st.models.ctc import build_ctc_model, load_ctc_model, save_ctc_model
from samu_st.models.decoder import DecoderConfig, build_mbart, load_mbart_decoder
from samu_st.models.encoder import EncoderConfig, SpeechEncoder, build_wav2vec2, load_wav2vec2
from samu_st.models.samu import SamuModel
from samu_st.models.teacher import TextTeacher, default_teacher_path
from samu_st.models.tokenizer import TargetTokenizer, load_mbart50_tokenizer, train_target_tokenizer
from samu_st.models.translator import (
    TranslatorConfig,
    build_translator,
    load_translator,
    save_translator,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "samu_st"

# --- source scan ---------------------------------------------------------------------------------

# Calls that fetch from the network or unpickle arbitrary objects: never in samu-st.
FORBIDDEN = {
    "hf_hub_download",
    "snapshot_download",
    "cached_download",
    "pickle.load",
    "pickle.loads",
    "torch.hub.load",
    "yaml.load",
    "yaml.unsafe_load",
    "yaml.full_load",
}
# Calls that make a later from_pretrained(path) safe: they raise for anything but a local folder.
LOCAL_CHECKS = {"require_local_folder", "require_pretrained_folder"}


def _name(node: ast.AST) -> str:
    """Dotted name of a call target (``.from_pretrained`` for any ``x.from_pretrained``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return f"{base}.{node.attr}" if base else f".{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _functions(tree: ast.AST) -> Iterator[tuple[ast.AST, set[str]]]:
    """Every function (and the module) with the names of the calls made directly in it."""
    scopes: list[ast.AST] = [tree]
    scopes += [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in scopes:
        calls = {_name(n.func).split(".")[-1] for n in ast.walk(scope) if isinstance(n, ast.Call)}
        yield scope, calls


def loading_violations(source: str, filename: str = "<src>") -> list[str]:
    """Unsafe loading calls in ``source``, as ``file:line: why``."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    guarded: set[int] = set()  # from_pretrained calls inside a function that checks its folder
    for scope, calls in _functions(tree):
        if calls & LOCAL_CHECKS and not isinstance(scope, ast.Module):
            guarded.update(id(n) for n in ast.walk(scope) if isinstance(n, ast.Call))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name, where = _name(node.func), f"{filename}:{node.lineno}"
        if name in FORBIDDEN or name.split(".")[-1] in {"hf_hub_download", "snapshot_download"}:
            found.append(f"{where}: {name}() is forbidden")
        if name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
            found.append(f"{where}: torch.load without weights_only=True")
        trust = _kw(node, "trust_remote_code")
        if trust is not None and not _is_const(trust, False):
            found.append(f"{where}: trust_remote_code is not False")
        if _is_const(_kw(node, "allow_pickle"), True):
            found.append(f"{where}: allow_pickle=True")
        if name.endswith(".from_pretrained"):
            local = _kw(node, "local_files_only")
            if local is not None and not _is_const(local, True):
                found.append(f"{where}: local_files_only is not True")
            elif local is None and id(node) not in guarded:
                found.append(
                    f"{where}: from_pretrained without local_files_only=True or a folder check"
                )
    return found


def test_source_has_no_unsafe_loading() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 30
    found = [
        v for f in files for v in loading_violations(f.read_text("utf-8"), str(f.relative_to(SRC)))
    ]
    assert found == []


def test_the_scan_finds_each_kind_of_violation() -> None:
    bad = """
import torch, pickle, yaml
from huggingface_hub import hf_hub_download
def f(path):
    torch.load(path)
    torch.load(path, weights_only=False)
    pickle.loads(b"")
    yaml.load(path)
    hf_hub_download("a/b", "c")
    AutoModel.from_pretrained(path)
    AutoModel.from_pretrained(path, local_files_only=False)
    AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=True)
    numpy.load(path, allow_pickle=True)
def g(path):
    folder = require_local_folder(path)
    GenerationConfig.from_pretrained(folder)
    torch.load(path, weights_only=True)
"""
    found = loading_violations(bad, "bad.py")
    assert [int(v.split(":")[1]) for v in found] == [5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert "torch.load without weights_only=True" in found[0]
    assert "trust_remote_code" in found[7]


# --- hub ids fail at once, with no network attempt ---------------------------------------------

ENC, DEC = "facebook/wav2vec2-xls-r-300m", "facebook/mbart-large-50-many-to-one-mmt"
TINY_ENC = EncoderConfig(size="tiny")
LOADERS: dict[str, Callable[[], object]] = {
    "encoder": lambda: load_wav2vec2(ENC),
    "encoder_config": lambda: SpeechEncoder.from_config(EncoderConfig(pretrained=ENC)),
    "teacher": lambda: TextTeacher.from_folder("sentence-transformers/LaBSE"),
    "decoder": lambda: load_mbart_decoder(DEC),
    "decoder_config": lambda: build_mbart(DecoderConfig(pretrained=DEC)),
    "tokenizer_mbart50": lambda: load_mbart50_tokenizer(DEC),
    "tokenizer": lambda: TargetTokenizer.load(DEC),
    "translator": lambda: load_translator("someone/samu-st-fr-en"),
    "translator_config": lambda: build_translator(
        TranslatorConfig(encoder=TINY_ENC, decoder=DecoderConfig(pretrained=DEC)), vocab_size=64
    ),
    "ctc": lambda: load_ctc_model("someone/wav2vec2-xlsr-ga-IE"),
    "ctc_config": lambda: build_ctc_model(EncoderConfig(pretrained=ENC), 8, 0),
    "samu": lambda: SamuModel.load("someone/samu-xlsr"),
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Any socket connection or name lookup is recorded and fails."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("test: network access attempted")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_hub_id_is_a_clear_offline_error_at_once(
    loader: str, no_network: list[tuple[Any, ...]]
) -> None:
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        LOADERS[loader]()
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "/" in message.split(":")[0]  # starts with the name that was given
    assert "never downloads" in message or "nothing is downloaded" in message
    assert elapsed < 5.0
    assert no_network == []


def test_the_network_guard_catches_a_connection(no_network: list[tuple[Any, ...]]) -> None:
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert len(no_network) == 1


# --- tampered checkpoints ------------------------------------------------------------------------


def tamper(weights: Path, pattern: str) -> str:
    """Give the first tensor whose name contains ``pattern`` one more row; returns its name."""
    tensors = load_file(weights)
    key = next(k for k in tensors if pattern in k)
    old = tensors[key]
    tensors[key] = torch.zeros((old.shape[0] + 1, *old.shape[1:]), dtype=old.dtype)
    save_file(tensors, weights, metadata={"format": "pt"})
    return key


def _encoder_folder(folder: Path) -> Callable[[], object]:
    build_wav2vec2(TINY_ENC).save_pretrained(folder)
    return lambda: load_wav2vec2(str(folder))


def _samu_folder(folder: Path) -> Callable[[], object]:
    SamuModel.from_config(TINY_ENC, 16).save(folder)
    return lambda: SamuModel.load(folder)


def _ctc_folder(folder: Path) -> Callable[[], object]:
    from transformers import Wav2Vec2CTCTokenizer

    vocab = folder.parent / "vocab.json"
    vocab.write_text(json.dumps({"[PAD]": 0, "[UNK]": 1, "|": 2, "a": 3, "b": 4}))
    tok = Wav2Vec2CTCTokenizer(str(vocab), unk_token="[UNK]", pad_token="[PAD]")
    save_ctc_model(build_ctc_model(TINY_ENC, 5, 0), folder, tok)
    return lambda: load_ctc_model(folder)


def _decoder_folder(folder: Path) -> Callable[[], object]:
    build_mbart(DecoderConfig(preset="tiny"), 64).save_pretrained(folder)
    return lambda: load_mbart_decoder(folder)


def _translator_folder(folder: Path) -> Callable[[], object]:
    tok = train_target_tokenizer([num2words(i) for i in range(60)], vocab_size=60)
    cfg = TranslatorConfig(encoder=TINY_ENC, decoder=DecoderConfig(preset="tiny"))
    save_translator(folder, build_translator(cfg, tok), tok, cfg)
    return lambda: load_translator(folder)


def _teacher_folder(folder: Path) -> Callable[[], object]:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(default_teacher_path() / name, folder / name)
    return lambda: TextTeacher.from_folder(folder)


TAMPERED = [
    pytest.param(
        "encoder",
        _encoder_folder,
        "model.safetensors",
        "layers.0.attention.k_proj.weight",
        id="encoder",
    ),
    pytest.param(
        "samu",
        _samu_folder,
        "encoder/model.safetensors",
        "layers.0.attention.k_proj.weight",
        id="samu",
    ),
    pytest.param("ctc", _ctc_folder, "model.safetensors", "lm_head.weight", id="ctc"),
    pytest.param(
        "decoder",
        _decoder_folder,
        "model.safetensors",
        "layers.0.encoder_attn.k_proj.weight",
        id="decoder",
    ),
    pytest.param(
        "translator",
        _translator_folder,
        "model.safetensors",
        "encoder_attn.k_proj.weight",
        id="translator",
    ),
    pytest.param(
        "teacher",
        _teacher_folder,
        "model.safetensors",
        "layer.0.attention.self.key.weight",
        id="teacher",
    ),
]


@pytest.mark.parametrize(("kind", "make", "weights", "pattern"), TAMPERED)
def test_tampered_checkpoint_names_the_tensor(
    kind: str,
    make: Callable[[Path], Callable[[], object]],
    weights: str,
    pattern: str,
    tmp_path: Path,
) -> None:
    load = make(tmp_path / kind)
    load()  # the untouched folder loads
    key = tamper(tmp_path / kind / weights, pattern)
    with pytest.raises(ModelLoadError) as info:
        load()
    message = str(info.value)
    assert str(tmp_path / kind) in message
    # the tensor, possibly without the prefix of the wrapping model
    names = {key.split(".", i)[-1] for i in range(3)}
    assert any(n in message for n in names if pattern in n), message
    assert "shape" in message
