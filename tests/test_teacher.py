"""Text teacher: the real all-MiniLM-L6-v2, tiny random BERT folders, the embedding cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

from samu_st.errors import ModelLoadError
from samu_st.models.teacher import (
    EmbeddingCache,
    TextTeacher,
    default_teacher_path,
    embed_cached,
    model_identity,
    native_pooling,
)

PAIRS = [
    ("A man is playing a guitar.", "Someone plays the guitar."),
    ("The stock market fell sharply today.", "Share prices dropped a lot this morning."),
    ("twenty three", "twenty-three"),
]


@pytest.fixture(scope="module")
def minilm() -> TextTeacher:
    return TextTeacher.from_folder(default_teacher_path(), pooling="mean", max_length=128)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with the MiniLM tokenizer files, saved like a hub folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    src = default_teacher_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, folder / name)
    return folder


def test_default_teacher_is_the_packaged_minilm() -> None:
    folder = default_teacher_path()
    assert (folder / "model.safetensors").stat().st_size > 80_000_000
    assert native_pooling(folder) == "mean"


def test_minilm_paraphrases_closer_than_unrelated(minilm: TextTeacher) -> None:
    texts = [t for pair in PAIRS for t in pair]
    emb = torch.nn.functional.normalize(minilm.embed(texts, batch_size=4), dim=-1)
    assert emb.shape == (6, 384)
    sim = emb @ emb.T
    for i in range(0, 6, 2):
        paraphrase = sim[i, i + 1].item()
        unrelated = max(sim[i, j].item() for j in range(6) if j // 2 != i // 2)
        assert paraphrase > 0.6, paraphrase  # measured 0.84, 0.61, 0.94
        assert unrelated < 0.2, unrelated  # measured at most 0.08
        assert paraphrase > unrelated + 0.4


def test_minilm_cls_pooling_still_ranks_paraphrases_first() -> None:
    """[CLS] (the paper's choice) of a mean-pooling-trained model is flatter but still ranks."""
    teacher = TextTeacher.from_folder(default_teacher_path(), pooling="cls", max_length=128)
    texts = [t for pair in PAIRS for t in pair]
    emb = torch.nn.functional.normalize(teacher.embed(texts), dim=-1)
    sim = emb @ emb.T
    for i in range(0, 6, 2):
        unrelated = max(sim[i, j].item() for j in range(6) if j // 2 != i // 2)
        assert sim[i, i + 1].item() > unrelated + 0.15  # measured margins 0.33, 0.19, 0.36


def test_minilm_batching_and_no_grad(minilm: TextTeacher) -> None:
    texts = [t for pair in PAIRS for t in pair]
    together = minilm.embed(texts, batch_size=64)
    one_by_one = torch.cat([minilm.embed([t]) for t in texts])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-4)
    assert not together.requires_grad
    assert all(not p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training
    assert minilm.embed([]).shape == (0, 384)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_tiny_bert_each_pooling(tiny_bert: Path, pooling: str) -> None:
    teacher = TextTeacher.from_folder(tiny_bert, pooling=pooling, max_length=16)  # type: ignore[arg-type]
    emb = teacher.embed(["hello world", "a much longer sentence than the first one"])
    assert emb.shape == (2, 32)
    batch = teacher.tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        out = teacher.model(**batch)
    expected = {
        "cls": out.last_hidden_state[0, 0],
        "pooler": out.pooler_output[0],
        "mean": out.last_hidden_state[0].mean(0),
    }[pooling]
    torch.testing.assert_close(emb[0], expected, atol=1e-5, rtol=1e-4)


def test_missing_pooler_weights_are_an_error(tmp_path: Path, tiny_bert: Path) -> None:
    folder = tmp_path / "no-pooler"
    shutil.copytree(tiny_bert, folder)
    model = BertModel.from_pretrained(tiny_bert, add_pooling_layer=False)
    model.save_pretrained(folder)
    TextTeacher.from_folder(folder, pooling="cls")  # the pooler is not needed for [CLS]
    with pytest.raises(ModelLoadError, match="would be random"):
        TextTeacher.from_folder(folder, pooling="pooler")


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        TextTeacher.from_folder(tmp_path / "LaBSE")
    with pytest.raises(ModelLoadError, match="never downloads"):
        TextTeacher.from_folder("sentence-transformers/LaBSE")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no weights file"):
        TextTeacher.from_folder(tmp_path)


class CountingTeacher(TextTeacher):
    def __init__(self, inner: TextTeacher) -> None:
        super().__init__(inner.model, inner.tokenizer, inner.pooling, inner.max_length, "tiny")
        self.embedded: list[str] = []

    def embed(self, texts, batch_size=64):  # type: ignore[no-untyped-def]
        self.embedded.extend(texts)
        return super().embed(texts, batch_size)


def test_cache_embeds_each_sentence_once(tmp_path: Path, tiny_bert: Path) -> None:
    teacher = CountingTeacher(TextTeacher.from_folder(tiny_bert, max_length=16))
    path = tmp_path / "cache" / "teacher.sqlite"
    with EmbeddingCache(path) as cache:
        first = embed_cached(teacher, ["one", "two", "one"], cache)
        assert teacher.embedded == ["one", "two"]
        assert cache.count() == 2
    with EmbeddingCache(path) as cache:  # a new run re-opens the file
        second = embed_cached(teacher, ["two", "three", "one"], cache)
        assert teacher.embedded == ["one", "two", "three"]
        assert cache.count(teacher.cache_key) == 3
    torch.testing.assert_close(second[0], first[1])
    torch.testing.assert_close(second[2], first[0])
    torch.testing.assert_close(second, teacher.embed(["two", "three", "one"]), atol=1e-5, rtol=0)


def test_cache_key_separates_models_and_poolings(tmp_path: Path, tiny_bert: Path) -> None:
    cls_teacher = TextTeacher.from_folder(tiny_bert, pooling="cls", max_length=16)
    mean_teacher = TextTeacher.from_folder(tiny_bert, pooling="mean", max_length=16)
    assert cls_teacher.cache_key != mean_teacher.cache_key
    assert model_identity(tiny_bert) != model_identity(default_teacher_path())
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        a = embed_cached(cls_teacher, ["hello"], cache)
        b = embed_cached(mean_teacher, ["hello"], cache)
        assert cache.count() == 2
        assert not torch.allclose(a, b)


def test_read_only_cache_reads_and_never_writes(tmp_path: Path, tiny_bert: Path) -> None:
    """Processes other than the merging one open the cache read-only (no write lock to wait on)."""
    import sqlite3

    teacher = TextTeacher.from_folder(tiny_bert, max_length=16)
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path) as cache:
        stored = embed_cached(teacher, ["one"], cache)
    with EmbeddingCache(path, read_only=True) as reader:
        found = reader.get(teacher.cache_key, ["one"])["one"]
        torch.testing.assert_close(torch.tensor(found), stored[0])
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.put(teacher.cache_key, ["two"], stored)
