#!/usr/bin/env bash
# The main job in one command: install mmfree into .venv, train the embedded default
# (recipes/tiny.yaml: a ~1M-parameter ternary byte-level model on Tiny Shakespeare, minutes on
# 2 CPU cores) and print a greedy sample from the trained model (the run ends with it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q "torch==2.13.0" 2>/dev/null || pip install -q torch
pip install -q .
mmfree train recipes/tiny.yaml "$@"
