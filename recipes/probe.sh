#!/usr/bin/env bash
# The probe of the shipped mini-XLS-R in its model card: a linear CTC head per layer on the
# frozen features of a random mini encoder, of the old demo's 200-update step-1 encoder and of
# mini-XLS-R (`samu-st probe`: fr, de, es, it of mini-CoVoST; test CER on unseen speakers).
# Usage: bash recipes/probe.sh [OUT]   (default runs/probe); writes OUT/probe.json, which
# `samu-st release` puts into the card when it is copied to <release out_dir>/probe.json.
# (A first try with `samu-st train-ctc` and a frozen encoder, 300 updates, left every encoder at
# CER 0.97-0.98: the head had not left CTC's blank plateau. Hence cached features and epochs.)
set -euo pipefail
out=${1:-runs/probe}
cd "$(dirname "$0")/.."
samu-st prepare mini --out "$out/mini-covost"
# the old demo's step 1: 200 SSL updates from scratch on mini-CoVoST's unlabeled audio
samu-st pretrain configs/mini.yaml out_dir="$out/step1-200" \
  "data.manifests=[$out/mini-covost/unlabeled.jsonl]"
samu-st probe random-mini "$out/step1-200/final" packaged:mini-xls-r \
  --corpus "$out/mini-covost" --out "$out/probe.json"
