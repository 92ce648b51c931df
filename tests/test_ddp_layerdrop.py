"""DDP with layerdrop (XLS-R checkpoints ship `layerdrop: 0.1`): a skipped layer leaves its
trainable parameters without gradient; the loop must tell DDP, or the second update dies with
"Expected to have finished reduction in the prior iteration"."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from torch import nn
from transformers import MBartConfig, Wav2Vec2Config, Wav2Vec2Model

from fixtures_corpora import TINY_CORPUS, mini_corpus
from samu_st.training.loop import drops_layers
from test_ddp import torchrun

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_drops_layers_sees_wav2vec2_and_mbart_layerdrop() -> None:
    tiny = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 32, "conv_dim": (8,), "conv_kernel": (10,),
            "conv_stride": (5,), "num_conv_pos_embeddings": 4,
            "num_conv_pos_embedding_groups": 2}  # fmt: skip
    assert drops_layers(Wav2Vec2Model(Wav2Vec2Config(layerdrop=0.1, **tiny)))
    assert not drops_layers(Wav2Vec2Model(Wav2Vec2Config(layerdrop=0.0, **tiny)))
    holder = nn.Module()
    holder.config = MBartConfig(decoder_layerdrop=0.2)  # type: ignore[assignment]
    assert drops_layers(holder)


def distill_yaml(tmp: Path, corpus: Path) -> Path:
    section = {
        "out_dir": str(tmp / "distill"),
        "data": {"manifests": [str(corpus)], "max_duration": 3.0},
        # layerdrop 0.5 on 2 layers: on 2 ranks x 4 updates some rank skips a layer at almost
        # every update (as the checkpoint's 0.1 does on 24 layers)
        "encoder": {"size": "tiny", "layerdrop": 0.5, "gradient_checkpointing": True},
        "teacher": {"pooling": "mean", "text_field": "target_text"},
        "train": {"max_steps": 4, "tensorboard": False, "progress_bar": False,
                  "log_every": 1, "save_every": 100},
    }  # fmt: skip
    path = tmp / "distill.yaml"
    path.write_text(yaml.safe_dump({"distill": section}), encoding="utf-8")
    return path


def test_distill_with_layerdrop_on_two_processes(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    corpus = mini_corpus(tmp_path_factory, TINY_CORPUS)
    cmd = [*torchrun(),
           "-m", "samu_st", "distill", str(distill_yaml(tmp_path, corpus))]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "distill" / "final").is_dir()
