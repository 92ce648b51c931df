#!/usr/bin/env bash
# SpeechBrain 1.1.2, the peer of benchmarks/speechbrain_samu, beside the CPU-only torch 2.13.
# SpeechBrain requires torchaudio, and no torchaudio is built for torch 2.13: pip would pull
# PyPI's CUDA-built torchaudio (which fails to load here) and may try to move torch. So
# SpeechBrain and its pure-Python dependencies go in with --no-deps, and torchaudio's Python
# part (enough for what SpeechBrain uses in the benchmark) goes into runs/bench/site-torchaudio
# without its compiled libraries, where benchmarks/speechbrain_samu.py looks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q -c constraints.txt --no-deps speechbrain hyperpyyaml ruamel.yaml \
  ruamel.yaml.clib joblib
TARGET=runs/bench/site-torchaudio
if [ ! -d "$TARGET/torchaudio" ]; then
  $PY -m pip install -q --no-deps --target "$TARGET" "torchaudio==2.11.1"
  rm -f "$TARGET"/torchaudio/lib/*.so
fi
