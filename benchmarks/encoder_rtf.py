"""Benchmark ``encoder_rtf``: the paper-size encoder's forward real-time factor on this machine.

The XLS-R 300M architecture (:class:`~samu_st.models.encoder.EncoderConfig` preset ``paper``,
random weights), one clip of ``rtf_seconds``, inference mode. Reference: fp32, as HF users run
it on a CPU. Ours: the same model under bf16 autocast (what ``train.cpu_bf16`` uses). FLOPs are
counted once with ``torch.utils.flop_counter.FlopCounterMode`` on the ``meta`` device (matmul,
convolution and attention FLOPs; norms and activations are not counted), and the achieved
FLOP/s is compared with a measured GEMM peak (``torch.matmul`` of two n×n matrices) in the same
precision.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Record, device, ratio
from benchmarks.corpus import Context
from samu_st.audio import SAMPLE_RATE
from samu_st.models.encoder import EncoderConfig, build_wav2vec2, encoder_parameter_summary

GEMM_REPEATS = 5


def count_flops(cfg: EncoderConfig, samples: int) -> int:
    """Forward FLOPs of the encoder on one clip of ``samples``, counted without computing."""
    with torch.device("meta"):
        model = build_wav2vec2(cfg).eval()
        wav = torch.zeros(1, samples)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(wav)
    return int(counter.get_total_flops())


def _autocast(dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device().type, dtype=dtype)


def time_forward(
    model: torch.nn.Module, wav: torch.Tensor, dtype: torch.dtype, repeats: int
) -> list[float]:
    """Wall seconds of ``repeats`` forwards (after one untimed warm-up forward)."""
    times = []
    with torch.inference_mode(), _autocast(dtype):
        for i in range(repeats + 1):
            _sync()
            start = time.perf_counter()
            model(wav)
            _sync()
            if i > 0:
                times.append(time.perf_counter() - start)
    return times


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gemm_peak(n: int, dtype: torch.dtype) -> float:
    """Best FLOP/s of ``torch.matmul`` on two n×n matrices of ``dtype``."""
    a = torch.randn(n, n, device=device()).to(dtype)
    b = torch.randn(n, n, device=device()).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        torch.matmul(a, b)
        for _ in range(GEMM_REPEATS):
            _sync()
            start = time.perf_counter()
            torch.matmul(a, b)
            _sync()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _side(times: list[float], seconds: float, flops: int, peak: float) -> dict[str, Any]:
    best = min(times)
    return {
        "forward_seconds": round(best, 4),
        "all_forward_seconds": [round(t, 4) for t in times],
        "rtf": round(best / seconds, 4),
        "achieved_gflops": round(flops / best / 1e9, 2),
        "gemm_peak_gflops": round(peak / 1e9, 2),
        "fraction_of_gemm_peak": round(flops / best / peak, 3),
    }


def run(ctx: Context) -> Record:
    sz = ctx.sizes
    rec = Record("encoder_rtf", ctx.quick)
    cfg = EncoderConfig(size=sz.rtf_encoder)  # type: ignore[arg-type]
    samples = int(sz.rtf_seconds * SAMPLE_RATE)
    flops = count_flops(cfg, samples)
    torch.manual_seed(0)
    model = build_wav2vec2(cfg).eval().to(device())
    wav = torch.randn(1, samples, device=device())
    fp32 = time_forward(model, wav, torch.float32, sz.rtf_repeats)
    bf16 = time_forward(model, wav, torch.bfloat16, sz.rtf_repeats)
    peak32, peak16 = gemm_peak(sz.gemm_n, torch.float32), gemm_peak(sz.gemm_n, torch.bfloat16)
    params = encoder_parameter_summary(model)
    rec.setup = {
        "encoder": f"{sz.rtf_encoder} preset (random weights), SDPA attention",
        "parameters": params["total"],
        "clip_seconds": sz.rtf_seconds,
        "batch": 1,
        "timed_forwards": sz.rtf_repeats,
        "forward_gflops": round(flops / 1e9, 2),
        "gemm_n": sz.gemm_n,
    }
    rec.ours = {
        "method": "bf16 autocast, inference mode",
        **_side(bf16, sz.rtf_seconds, flops, peak16),
    }
    rec.reference = {
        "method": "fp32, inference mode (how HF users run it on a CPU)",
        "available": True,
        **_side(fp32, sz.rtf_seconds, flops, peak32),
    }
    rec.ratios = {"speed": ratio(min(bf16), min(fp32), higher_is_better=False)}
    rec.headline = "speed"
    rec.notes = [
        "rtf = forward seconds / clip seconds (below 1 = faster than real time); best of the "
        "timed forwards",
        "FLOPs from FlopCounterMode (matmul, conv, attention); each side's fraction is of the "
        "GEMM peak measured in its own precision",
    ]
    return rec
