#!/usr/bin/env bash
# Installs everything samu-st needs on a fresh Debian machine (root, apt and pip reachable).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi

PY=${PYTHON:-python3}
# The CPU build of torch lies on local disk; pin it before anything else can pull a CUDA build.
$PY -m pip install -q "torch==2.13.0"
# Every other version is pinned: the results in the README depend on them.
$PY -m pip install -q -c constraints.txt -e ".[dev,lm,bench,release,whisper]"
# n-gram LM beam search (pyctcdecode): its numpy<2 pin is stale, so no deps from it.
$PY -m pip install -q -c constraints.txt --no-deps "pyctcdecode==0.5.0"
# SpeechBrain, the peer of one benchmark (no torchaudio build exists for torch 2.13).
bash scripts/install-speechbrain.sh
