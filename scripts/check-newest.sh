#!/usr/bin/env bash
# Reports (never fails) whether the newest releases of the libraries the results depend on
# still pass a core subset of the tests. constraints.txt pins what `make test` and `make demo`
# use; this runs the same subset in a throwaway virtual environment that shares the pinned
# torch (an unpinned torch would pull a multi-GB CUDA build) and upgrades everything else that
# moves fast. CI calls it after the test suite; its last line says OK or BROKEN.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=$(mktemp -d)/newest
packages="transformers accelerate tokenizers datasets sentence-transformers safetensors numpy sacrebleu jiwer soundfile soxr"
subset="tests/test_decoder.py tests/test_beam.py tests/test_samu.py tests/test_adapters.py tests/test_encoder.py tests/test_metrics.py tests/test_teacher.py"
report() { echo "newest releases: $1"; rm -rf "$(dirname "$venv")"; exit 0; }
$PY -m venv --system-site-packages "$venv" || report "BROKEN (could not create a virtual environment)"
if ! timeout 600 "$venv/bin/python" -m pip install -q --upgrade $packages >/dev/null 2>&1; then
  report "UNKNOWN (pip could not install the newest $packages)"
fi
versions=$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE "^($(echo $packages | tr ' ' '|'))==" | tr '\n' ' ')
echo "newest: $versions"
if timeout 900 "$venv/bin/python" -m pytest -x -q -p no:cacheprovider $subset; then
  report "OK ($versions)"
fi
report "BROKEN with $versions (constraints.txt keeps the tested versions; see the failure above)"
