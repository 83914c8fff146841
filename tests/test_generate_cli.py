"""`mmfree generate` through the real CLI: argument, stdin, --json, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfree_cli.engines import load_engine
from mmfree_cli.generate import complete
from mmfree_cli.paths import point_latest
from test_generate import make_model_dir

MMFREE = str(Path(sys.executable).parent / "mmfree")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def mmfree(*args, cwd=None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MMFREE, *args], cwd=cwd, input=stdin if stdin is not None else "", capture_output=True,
                          text=True, timeout=120, env=ENV)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project directory whose runs/latest is a small printable model."""
    root = tmp_path_factory.mktemp("project")
    make_model_dir(root / "runs" / "r1", printable=True)
    point_latest(root / "runs" / "r1")
    return root


def test_generate_newest_run_from_argument_and_stdin(project):
    torch.set_num_threads(1)
    want = complete(load_engine("auto", project / "runs" / "r1"), "ROMEO:", max_new_tokens=30)
    r = mmfree("generate", "ROMEO:", "-n", "30", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n" and "tokens/s" in r.stderr
    r = mmfree("generate", str(project / "runs" / "r1"), "-n", "30", "--json", stdin="ROMEO:")
    out = json.loads(r.stdout)
    assert out["text"] == want and out["completion_tokens"] == 30 and out["tokens_per_s"] > 0
    assert out["engine"] == "torch" and out["finish_reason"] == "length"


@pytest.mark.parametrize("args, needle", [
    (["generate", "x", "-t", "-0.5"], "temperature"),
    (["generate", "runs/r1", "x", "extra"], "expected [MODEL] [PROMPT]"),
    (["generate", "runs/nope", "x"], "not found"),
    (["generate", "nowhere/model", "x"], "mmfree download nowhere/model"),  # Hub-shaped: not cached, no network
    (["generate", "x", "--engine", "warp"], "unknown engine"),
])
def test_generate_bad_input_is_one_line_exit_2(project, args, needle):
    r = mmfree(*args, cwd=project)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_generate_without_runs_says_what_to_do(tmp_path):
    r = mmfree("generate", "x", cwd=tmp_path)
    assert r.returncode == 2 and "mmfree train" in r.stderr
