#!/usr/bin/env bash
# Install everything the tests need into a fresh virtual environment, then run them.
# Usage: bash scripts/test.sh [extra pytest args]      (CI runs exactly this: .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase prints its name and duration. The venv is fresh every run (a project rule: what CI
# tests is what a clean install gives); pip's wheel cache (~/.cache/pip, on by default) is what
# makes the second run's install quick, so it is left on.
phase_start=$SECONDS
phase() { [ "$phase_start" = "$SECONDS" ] || echo "    ($(( SECONDS - phase_start )) s)"; echo "==> $1"; phase_start=$SECONDS; }

phase "system packages (iverilog, fuse3, tcl)"
# System packages: an RTL simulator (Icarus), FUSE for the emulated FPGA card, and tclsh (the
# bundle's Vivado scripts are checked as Tcl).
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=""
  for pkg in iverilog fuse3 libfuse3-dev tcl; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

phase "fresh venv .venv-test: torch (CPU) and .[dev]"
VENV=.venv-test
rm -rf "$VENV"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A CPU build of torch: 2.13.0 is on disk on our CI machines; elsewhere pip fetches it.
pip install -q "torch==2.13.0" 2>/dev/null || pip install -q torch
pip install -q ".[dev]"

phase "lint (ruff)"
ruff check src tests bench  # the lint rules of pyproject.toml [tool.ruff]

# Triton kernels run in the interpreter on CPU-only machines, so every kernel meets its twin.
export TRITON_INTERPRET=1
# One run of the default and the slow suite together (everything but -m gpu), a worker per core:
# the long slow tests (synthesis, RTL simulation, training) overlap the many short ones.
phase "tests (default suite and -m slow, pytest-xdist on every core)"
python -m pytest -q -n auto --dist worksteal -m "not gpu" "$@"
phase "done, ${SECONDS} s in all"
