#!/usr/bin/env bash
# The main job in one command: install mmfree into .venv, train the embedded default
# (recipes/tiny.yaml: a ~1M-parameter ternary byte-level model on Tiny Shakespeare) and print a
# sample from the trained model (the run ends with it), then the commands to go on with.
# Each phase prints its name and how long it took. Extra arguments go to `mmfree train`
# (e.g. train.max_steps=200 for a shorter run).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

phase_start=$SECONDS
phase() { echo; echo "==> [$1] $2"; phase_start=$SECONDS; }
done_in() { echo "    ($(( SECONDS - phase_start )) s)"; }

phase "1/3 install" "python venv .venv + PyTorch (CPU) + mmfree — a few minutes the first time"
python3 -m venv .venv
. .venv/bin/activate
echo "    torch…"
pip install -q "torch==2.13.0" 2>/dev/null || pip install -q torch
echo "    mmfree and its dependencies…"
pip install -q .
done_in

phase "2/3 train" "mmfree train recipes/tiny.yaml $* (progress below; a sample from the model at the end)"
mmfree train recipes/tiny.yaml "$@"
done_in

phase "3/3 next" "what to try now"
cat <<'EOF'
    source .venv/bin/activate          # every shell: puts `mmfree` on PATH (no need to pip install again)
    mmfree generate "ROMEO:" -t 0.8    # more text from the model you just trained (runs/latest)
    mmfree chat                        # talk to it; /help lists the commands
    mmfree runs                        # your runs, their state and validation loss
    mmfree eval                        # perplexity and bits per byte on the held-out text
    mmfree export --target cpu && mmfree generate "ROMEO:" --engine cpu   # integer-only CPU inference
    mmfree download ridger/MMfreeLM-370M && mmfree chat ridger/MMfreeLM-370M   # a released checkpoint
EOF
echo "    total: ${SECONDS} s"
