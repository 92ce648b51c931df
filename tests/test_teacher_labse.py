"""The teacher vector is the sentence-transformers sentence embedding (issue 14, defect 3):
LaBSE's [CLS] → Dense(tanh) → L2-normalise, equal to ``SentenceTransformer.encode``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from samu_st.errors import ModelLoadError
from samu_st.models.teacher import TeacherPlan, TextTeacher, default_teacher_path
from samu_st.steps.distill import TeacherConfig
from standins.labse import MAX_SEQ_LENGTH, write_labse

TEXTS = ["the cat", "Le chat noir!", "Der Hund 2", "x", "una " * 40]  # the last is truncated


def encode_reference(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    return np.asarray(model.encode(texts, batch_size=2))


@pytest.fixture(scope="module", params=["current", "legacy"])
def labse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labse(tmp_path_factory.mktemp(f"labse-{request.param}"), request.param)


def test_native_vector_equals_sentence_transformers_encode(labse: Path) -> None:
    teacher = TextTeacher.from_folder(labse, pooling="native")
    ours = teacher.embed(TEXTS, batch_size=3).numpy()
    np.testing.assert_allclose(ours, encode_reference(labse, TEXTS), atol=1e-5, rtol=0)
    assert teacher.max_length == MAX_SEQ_LENGTH  # the folder's truncation, as encode() uses
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_describe_names_the_chain(labse: Path) -> None:
    described = TextTeacher.from_folder(labse, pooling="native").describe()
    assert described["pooling"] == "cls" and described["normalize"] is True
    assert described["dense"]["activation"] == "torch.nn.modules.activation.Tanh"
    assert described["summary"] == "cls + dense(tanh) + normalize"


def test_raw_cls_is_another_vector(labse: Path) -> None:
    """What ``pooling: cls`` (and ``native`` before the fix) took: the raw [CLS] state."""
    raw = TextTeacher.from_folder(labse, pooling="cls")
    native = TextTeacher.from_folder(labse, pooling="native")
    a, b = raw.embed(TEXTS[:3]), native.embed(TEXTS[:3])
    assert (a - b).abs().max() > 0.1
    assert not np.allclose(a.numpy(), encode_reference(labse, TEXTS[:3]), atol=1e-2)
    assert raw.cache_key != native.cache_key  # a cached raw table is never reused as native
    assert raw.describe()["dense"] is None and raw.describe()["normalize"] is False


def test_transformer_in_a_subfolder(tmp_path: Path) -> None:
    """Older sentence-transformers folders keep the HF model in ``0_Transformer``."""
    folder = write_labse(tmp_path / "st", "legacy")
    sub = folder / "0_Transformer"
    sub.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "vocab.txt", "sentence_bert_config.json"):  # fmt: skip
        shutil.move(folder / name, sub / name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (folder / "modules.json").write_text(json.dumps(modules))
    ours = TextTeacher.from_folder(folder, pooling="native").embed(TEXTS[:3]).numpy()
    np.testing.assert_allclose(ours, encode_reference(folder, TEXTS[:3]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("file", "edit", "match"),
    [
        ("1_Pooling/config.json", {"pooling_mode": "weightedmean"}, "pooling mode 'weightedmean'"),
        ("1_Pooling/config.json", {"pooling_mode": "median"}, "pooling mode 'median'"),
        ("1_Pooling/config.json", {"pooling_mode_cls_token": False}, "sets none"),
        ("2_Dense/config.json", {"activation_function": "my.Act"}, "activation_function"),
    ],
)
def test_what_it_cannot_compute_is_an_error_naming_the_file(
    tmp_path: Path, file: str, edit: dict[str, object], match: str
) -> None:
    folder = write_labse(tmp_path / "labse", "legacy")
    path = folder / file
    cfg = json.loads(path.read_text())
    if "pooling_mode" in edit:
        cfg = {"embedding_dimension": 32}
    cfg.update(edit)
    path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=match) as err:
        TextTeacher.from_folder(folder, pooling="native")
    assert str(path) in str(err.value)


def test_native_on_a_plain_bert_folder_is_an_error(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100)  # fmt: skip
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=r"modules\.json"):
        TeacherPlan.of(tmp_path, "native", 64)


def test_packaged_minilm_native_is_mean_then_normalize() -> None:
    """The embedded default keeps working: its chain is Transformer, Pooling(mean), Normalize."""
    folder = default_teacher_path()
    teacher = TextTeacher.from_folder(folder, pooling="native", max_length=256)
    assert teacher.describe()["summary"] == "mean + normalize"
    texts = ["A man is playing a guitar.", "twenty three"]
    ours = teacher.embed(texts).numpy()
    np.testing.assert_allclose(ours, encode_reference(folder, texts), atol=1e-5, rtol=0)
    # the explicit mean of the mini configs stays the raw, unnormalised mean
    raw = TextTeacher.from_folder(folder, pooling="mean").embed(texts)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), torch.from_numpy(ours),
                               atol=1e-5, rtol=0)  # fmt: skip


def test_teacher_config_defaults_and_device_check() -> None:
    cfg = TeacherConfig()
    assert cfg.pooling == "native" and cfg.device == "auto"
    from samu_st.errors import ConfigError

    with pytest.raises(ConfigError, match="device"):
        TeacherConfig(device="gpu0")


def test_paper_config_uses_labse_native() -> None:
    import yaml

    paper = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"
    teacher = yaml.safe_load(paper.read_text())["distill"]["teacher"]
    assert teacher["pooling"] == "native" and teacher.get("device", "auto") == "auto"
