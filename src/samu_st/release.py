"""The shipped mini checkpoints: their recipe (``samu-st release RECIPE``) and where they live.

The paper starts from released checkpoints (XLS-R, MBART-50); the mini path does the same with
two small ones inside the package, ``resources/checkpoints/<name>``:

- ``mini-xls-r``: a ``Wav2Vec2Model`` folder (step 1 of :mod:`samu_st.steps.pretrain` on the
  synthetic multilingual corpus of :mod:`samu_st.data.release_corpus`);
- ``mini-mbart-50``: an ``MBartForConditionalGeneration`` folder with an MBART-50-layout
  tokenizer (:mod:`samu_st.models.mbart50_format`), pretrained by text denoising
  (:mod:`samu_st.steps.pretrain_text`) on English and the 18 CoVoST-2 languages MBART-50 has.

Weights are stored as float16 safetensors (half the bytes) while ``config.json`` declares
float32, so ``from_pretrained`` upcasts them on load and every run computes as it would from a
float32 checkpoint. Each folder has a model card (``README.md``) and ``release.json`` (recipe,
updates, seed, wall time, machine, SHA-256 of every file). A config path ``packaged:<name>``
names such a folder (:mod:`samu_st.packaged`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samu_st.atomic import atomic_folder
from samu_st.config import load_step_config, to_dict
from samu_st.data.release_corpus import ReleaseCorpusConfig, build_release_corpus, text_files
from samu_st.models.mbart50_format import vocab_size, write_mbart50_tokenizer
from samu_st.packaged import DECODER, ENCODER, packaged_dir

__all__ = ["DECODER", "ENCODER", "ReleaseConfig", "packaged_dir"]


@dataclass(frozen=True)
class ReleaseConfig:
    """The ``release:`` section of a recipe: corpus and tokenizer (the steps have their own)."""

    out_dir: str = "runs/release"  # corpus/, tokenizer/ (the step sections name their folders)
    corpus: ReleaseCorpusConfig = field(default_factory=ReleaseCorpusConfig)
    tokenizer_pieces: int = 8000  # sentencepiece pieces (+ 52 language codes + <mask>)


def make_tokenizer(cfg: ReleaseConfig, corpus: Path) -> Path:
    """The MBART-50-layout tokenizer trained on the corpus's text (made once, atomically)."""
    folder = Path(cfg.out_dir) / "tokenizer"
    if (folder / "tokenizer_config.json").is_file():
        return folder
    texts = [
        line.split("\t", 1)[1].rstrip("\n")
        for path in text_files(corpus)
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
    ]
    with atomic_folder(folder, point="release.tokenizer") as tmp:
        write_mbart50_tokenizer(tmp, texts, cfg.tokenizer_pieces)
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name not in ("README.md", "release.json")
    }


def _half_with_float32_config(model: torch.nn.Module, folder: Path) -> None:
    """Save ``model`` with float16 tensors and a float32 ``config.json`` (see module doc)."""
    model.half().save_pretrained(folder)  # type: ignore[operator]
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def package_encoder(final: Path, dest: Path) -> Path:
    """The step-1 encoder folder as the shipped ``mini-xls-r`` (into ``dest``/tmp first)."""
    from transformers import Wav2Vec2Model

    from samu_st.models.ctc import default_feature_extractor

    model = Wav2Vec2Model.from_pretrained(str(final), local_files_only=True, dtype=torch.float32)
    _half_with_float32_config(model, dest)
    default_feature_extractor().save_pretrained(dest)
    return dest


def package_decoder(final: Path, tokenizer: Path, pieces: int, dest: Path) -> Path:
    """The text-pretrained MBART as the shipped ``mini-mbart-50``: the rows of tokens added
    for ca/cy during pretraining (never in its text) are cut, leaving MBART-50's layout."""
    from transformers import MBart50Tokenizer, MBartForConditionalGeneration

    from samu_st.models.mbart50_format import generation_config

    model = MBartForConditionalGeneration.from_pretrained(
        str(final), local_files_only=True, dtype=torch.float32
    )
    model.resize_token_embeddings(vocab_size(pieces))
    model.generation_config = generation_config(pieces)
    _half_with_float32_config(model, dest)
    MBart50Tokenizer.from_pretrained(str(tokenizer), local_files_only=True).save_pretrained(dest)
    for name in ("sentencepiece.bpe.model", "special_tokens_map.json"):  # the release's files too
        shutil.copyfile(tokenizer / name, dest / name)
    return dest


def probe_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``samu-st probe --out`` a card shows: encoder, best layer, its CER, last."""
    return [
        {
            "encoder": r["name"],
            "best_layer": r["best_layer"]["layer"],
            "cer_best": round(r["best_layer"]["cer"], 3),
            "cer_last": round(r["last_layer"]["cer"], 3),
            "test_clips": r["test_clips"],
        }
        for r in results
    ]


def _probe_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = "\n".join(
        f"| {r['encoder']} | {r['cer_best']:.3f} (layer {r['best_layer']}) | {r['cer_last']:.3f} |"
        for r in rows
    )
    return (
        "\n## Probe\n\nA linear CTC head on the frozen features of each layer (`samu-st probe`: "
        "fr, de, es, it of mini-CoVoST, train speakers -> character error rate on the "
        f"{rows[0]['test_clips']} test clips of unseen speakers):\n\n"
        f"| encoder | CER, best layer | CER, last layer |\n| --- | ---: | ---: |\n{lines}\n"
    )


def write_card(folder: Path, name: str, facts: dict[str, Any], card: str) -> None:
    """``release.json`` (facts + SHA-256 of every file) and the model card ``README.md``."""
    facts = {**facts, "sha256": _digests(folder)}
    (folder / "release.json").write_text(json.dumps(facts, indent=2) + "\n")
    sums = "\n".join(f"| `{k}` | `{v}` |" for k, v in facts["sha256"].items())
    (folder / "README.md").write_text(
        f"# {name}\n\n{card.strip()}\n\n## Made by\n\n```\n{facts['command']}\n```\n\n"
        f"- updates: {facts['updates']}, seed {facts['seed']}\n"
        f"- wall time: {facts['wall_minutes']} min on {facts['machine']} "
        f"({facts.get('wall_note', '')})\n"
        f"- data: {facts['data']}\n- date: {facts['date']}\n"
        f"{_probe_table(facts.get('probe', []))}\n"
        f"| file | SHA-256 |\n| --- | --- |\n{sums}\n",
        encoding="utf-8",
    )


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model and core count, for the cards."""
    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def load_release_config(recipe: Path, overrides: tuple[str, ...] = ()) -> ReleaseConfig:
    return load_step_config(ReleaseConfig, recipe, "release", list(overrides))


def corpus_and_tokenizer(cfg: ReleaseConfig) -> tuple[Path, Path]:
    """Stages 1-2 of the recipe (each done once)."""
    corpus = build_release_corpus(cfg.corpus, Path(cfg.out_dir) / "corpus")
    return corpus, make_tokenizer(cfg, corpus)


def summary(cfg: ReleaseConfig) -> dict[str, Any]:
    """The corpus facts written into the cards."""
    meta = json.loads((Path(cfg.out_dir) / "corpus" / "corpus.json").read_text())
    return {"corpus": meta["summary"], "corpus_config": to_dict(cfg.corpus)}
