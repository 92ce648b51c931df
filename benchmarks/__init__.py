"""samu-st benchmarks: each one measures samu-st against the Hugging Face reference way of doing
the same job, at the same model size on the same data, and prints one JSON object.

Run ``python -m benchmarks [--only NAME ...] [--quick] [--out FILE.jsonl]``; see README.md.
"""

from __future__ import annotations

# name -> module: each module has `run(ctx: benchmarks.corpus.Context) -> benchmarks.common.Record`
BENCHMARKS: dict[str, str] = {
    "st_train": "benchmarks.st_train",
    "padding": "benchmarks.padding",
    "beam_search": "benchmarks.beam_search",
    "data_loading": "benchmarks.data_loading",
    "ctc_train": "benchmarks.ctc_train",
    "encoder_rtf": "benchmarks.encoder_rtf",
    "paper_step": "benchmarks.paper_step",
    "speechbrain_samu": "benchmarks.speechbrain_samu",
    "scaling": "benchmarks.scaling",
}
