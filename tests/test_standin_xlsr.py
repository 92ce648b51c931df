"""The XLS-R stand-in in both weight layouts loads into our encoder with every weight and the
checkpoint's training fields (layerdrop 0.1, mask_time_prob 0.075), unless a config says else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samu_st.models.encoder import EncoderConfig, build_wav2vec2
from standins.xlsr import write_xlsr


@pytest.mark.parametrize("legacy", [False, True])
def test_both_layouts_load_the_same_weights(tmp_path: Path, legacy: bool) -> None:
    folder = write_xlsr(tmp_path / "xlsr", legacy=legacy)
    assert (folder / ("pytorch_model.bin" if legacy else "model.safetensors")).is_file()
    model = build_wav2vec2(EncoderConfig(pretrained=str(folder)))
    assert model.config.layerdrop == pytest.approx(0.1)
    assert model.config.mask_time_prob == pytest.approx(0.075)
    assert model.config.do_stable_layer_norm and model.config.feat_extract_norm == "layer"
    reference = build_wav2vec2(EncoderConfig(pretrained=str(write_xlsr(tmp_path / "ref"))))
    ref = reference.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ref[name]), name  # the weight-normed conv included
    explicit = build_wav2vec2(EncoderConfig(pretrained=str(folder), layerdrop=0.0))
    assert explicit.config.layerdrop == 0.0
