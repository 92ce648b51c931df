#!/usr/bin/env bash
# Probe of the shipped mini-XLS-R against a random encoder and the old demo's 200-update step-1
# encoder: a linear CTC head on frozen features, CER on unseen test speakers (probe-ctc.yaml).
# Usage: bash recipes/probe.sh [OUT]   (default runs/probe); writes OUT/probe.json.
set -euo pipefail
out=${1:-runs/probe}
cd "$(dirname "$0")/.."
samu-st prepare mini --out "$out/mini-covost"
# the old demo's step 1: 200 SSL updates from scratch on mini-CoVoST's unlabeled audio
samu-st pretrain configs/mini.yaml out_dir="$out/step1-200" \
  "data.manifests=[$out/mini-covost/unlabeled.jsonl]"
declare -A encoders=([random]=null [ssl-200]="$out/step1-200/final" [mini-xls-r]=packaged:mini-xls-r)
for name in random ssl-200 mini-xls-r; do
  samu-st train-ctc recipes/probe-ctc.yaml out_dir="$out/$name" \
    "data.manifests=[$out/mini-covost]" "encoder.pretrained=${encoders[$name]}"
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {}
for name in ("random", "ssl-200", "mini-xls-r"):
    rows[name] = json.loads((out / name / "evaluation.json").read_text())
(out / "probe.json").write_text(json.dumps(rows, indent=2) + "\n")
for name, ev in rows.items():
    print(name, json.dumps(ev)[:300])
PY
