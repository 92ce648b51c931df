#!/usr/bin/env bash
# The measurements of one lent GPU (README, "On a GPU"), as one command on the GPU machine,
# from the repository root, with the project's dependencies importable (the device tool's
# call installs the pinned wheels first). Results go to $OUT (default runs/gpu):
#   gpu.jsonl            paper_step (--gpu-only: the 10-minute batch) and scaling records
#   scaling-gpu.png      the GPU scaling curves
#   gpu.log              everything printed, with each part's exit status and times
# Each part has its own time limit, so one that hangs leaves the others' results.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=${WORK:-/tmp/samu-bench}

part() {  # part LIMIT_SECONDS COMMAND...
    local limit=$1
    shift
    echo "== $(date -u +%T) $* (limit ${limit} s)"
    timeout "$limit" "$@"
    echo "== $(date -u +%T) exit status $?"
}

date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import sys, torch, transformers, accelerate, samu_st
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'transformers', transformers.__version__, 'accelerate', accelerate.__version__,
      torch.cuda.get_device_name(0))" || exit 1
nproc

# 1. The paper-size step-3 update at the paper's 10-minute batch (60 x 10 s), bf16, SDPA,
#    gradient checkpointing: seconds per update, audio hours per GPU-hour, MFU, peak memory;
#    beam-5 decode of a 10 s clip, ours vs generate().
part "${PAPER_LIMIT:-200}" python3 -m benchmarks --only paper_step --gpu-only --work "$WORK" \
    --out "$OUT/gpu.jsonl"
# 2. The CUDA paths the CPU suite cannot reach (fp16 + scaler, bf16, beam search, teacher,
#    front-end cache on the GPU).
part "${TESTS_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider -rfE tests/test_gpu.py
# 3. Scaling curves on the GPU: s/update against batch seconds (15 -> 600 s, mini size) and
#    against model size (tiny -> paper size at 600 s), every point in this process.
part "${SCALING_LIMIT:-240}" python3 -m benchmarks --only scaling --isolate no --work "$WORK" \
    --out "$OUT/gpu.jsonl"
date -u
