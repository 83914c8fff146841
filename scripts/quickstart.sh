#!/usr/bin/env bash
# Install mmfree into .venv, train the embedded default (recipes/tiny.yaml) and print a sample.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q "torch==2.13.0" 2>/dev/null || pip install -q torch
pip install -q .
mmfree info tiny
