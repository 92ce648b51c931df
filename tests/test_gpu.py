"""The CUDA paths, on a machine with a GPU (every test here is skipped without one; CI has
none). What the CPU suite cannot reach: fp16 training with its gradient scaler, bf16 autocast
on the GPU, our beam search against ``generate()`` on the GPU, the teacher on the GPU, and the
front-end cache serving GPU tensors. The rest of the suite also runs on a GPU machine, where
the training loop picks the GPU (bf16) unless a config says ``cpu: true``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class CudaAutocastProbe:
    """A toy task that records whether CUDA autocast was on, and in which dtype."""

    def __init__(self) -> None:
        from toy_train import ToyTask

        self.inner = ToyTask()
        self.seen: set[tuple[bool, torch.dtype]] = set()
        self.frozen_dtypes: set[torch.dtype] = set()  # the toy's frozen Linear

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        self.seen.add((torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")))
        self.frozen_dtypes.add(getattr(model, "module", model).frozen.weight.dtype)
        return self.inner.loss(model, batch)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_trains_on_the_gpu(tmp_path: Path, precision: str) -> None:
    from test_loop import run_toy

    probe = CudaAutocastProbe()
    result, model = run_toy(tmp_path, steps=40, task=probe, mixed_precision=precision, cpu=False)  # type: ignore[arg-type]
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    assert probe.seen == {(True, dtype)}
    # train.bf16_frozen_weights: stored in bf16 under bf16 autocast only
    assert probe.frozen_dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert model.frozen.weight.dtype == torch.float32  # the fp32 parameter is back
    assert next(model.parameters()).device.type == "cuda"
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0], losses  # fp32 on the CPU: 1.46 -> 0.69
    # fp16's scaler starts at 2**16 and halves on overflow: a few skipped updates at most
    assert result.overflow_skipped <= 5 and result.nonfinite_skipped == 0


def test_fp16_resume_is_exact_with_the_scaler_state(tmp_path: Path) -> None:
    from test_loop import CrashAt, assert_same_weights, run_toy

    kw: dict[str, Any] = {"steps": 14, "save_every": 4, "mixed_precision": "fp16", "cpu": False}
    _, straight = run_toy(tmp_path / "a", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_toy(tmp_path / "b", task=CrashAt(10), **kw)
    result, resumed = run_toy(tmp_path / "b", resume=True, **kw)
    assert result.resumed_from == 8 and result.step == 14
    assert_same_weights(straight, resumed)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_beam_search_equals_generate_on_the_gpu(num_beams: int) -> None:
    from fixtures_corpora import number_tokenizer, random_translator
    from samu_st.models.encoder import lengths_to_mask
    from samu_st.models.tokenizer import generate_kwargs
    from test_beam import EOS_BIAS, LANGS, LENGTHS, _ours

    tokenizer = number_tokenizer()
    model = random_translator(tokenizer, eos_bias=EOS_BIAS).to("cuda")
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor(LENGTHS)
    mask = lengths_to_mask(lengths, max(LENGTHS))
    values = torch.randn(len(LENGTHS), max(LENGTHS), generator=generator) * mask
    batch = (values.cuda(), mask.long().cuda())
    kwargs = {"num_beams": num_beams, "max_new_tokens": 12, "length_penalty": 1.0}
    ours = _ours(model, tokenizer, batch, **kwargs)  # its prefix is built on the CPU
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            inputs=batch[0], attention_mask=batch[1], do_sample=False, **kwargs,
            **generate_kwargs(tokenizer, LANGS, device="cuda"),
        )  # fmt: skip
    theirs = out.tolist()
    for row in theirs:  # generate() pads finished rows on the right
        while row and row[-1] == tokenizer.pad_id:
            row.pop()
    assert ours == theirs
    assert len({len(row) for row in ours}) >= 2


def test_teacher_on_the_gpu_gives_the_cpu_vectors(tmp_path: Path) -> None:
    from samu_st.models.teacher import TextTeacher, resolve_device
    from standins.labse import write_labse

    assert resolve_device("auto").type == "cuda"
    folder = write_labse(tmp_path / "labse", "current")
    texts = ["the cat", "Le chat noir!", "Der Hund 2", "x"]
    cpu = TextTeacher.from_folder(folder, pooling="native").embed(texts).numpy()
    gpu_teacher = TextTeacher.from_folder(folder, pooling="native", device="cuda")
    assert gpu_teacher.device.type == "cuda"
    gpu = gpu_teacher.embed(texts).cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, atol=1e-4, rtol=0)


def test_front_end_cache_serves_gpu_features() -> None:
    from samu_st.models.front_end_cache import FrontEndCache
    from test_front_end_cache import _batch, _encoder, _waves

    model = _encoder(mode="adapters").model.cuda().train()
    values, lengths = (t.cuda() for t in _batch(_waves()))
    cache = FrontEndCache(2**20)
    reference = model.feature_extractor(values).detach()
    frames = model._get_feat_extract_output_lengths(lengths).tolist()
    for _ in range(2):
        served = cache.features(model, values, lengths)
        assert served.device.type == "cuda" and served.shape == reference.shape
        for row, n in enumerate(frames):
            torch.testing.assert_close(served[row, :, :n], reference[row, :, :n])
    assert (cache.stats.misses, cache.stats.hits) == (4, 4)
