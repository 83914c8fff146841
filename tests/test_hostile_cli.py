"""Careless and hostile command lines: read-only and full disks, files where directories belong,
impossible flags. Each ends in one line on stderr and exit code 2, with no traceback and no
temporary or half-written file left behind for a later command to pick up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from disks import full_disk, leftovers, read_only_dir
from mmfree_cli.paths import point_latest
from test_generate import make_model_dir

MMFREE = str(Path(sys.executable).parent / "mmfree")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    make_model_dir(root / "runs" / "r1", printable=True)
    point_latest(root / "runs" / "r1")
    (root / "a-file").write_text("not a directory\n")
    return root


def run_all(cases: dict[str, list[str]], cwd: Path, preexec=None, stdin: str = "") -> dict[str, subprocess.CompletedProcess]:
    """Start every case at once (each pays the torch import), then collect them."""
    procs = {name: subprocess.Popen([MMFREE, *args], cwd=cwd, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, preexec_fn=preexec)
             for name, args in cases.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(stdin, timeout=300)
        done[name] = subprocess.CompletedProcess(cases[name], proc.returncode, out, err)
    return done


def assert_one_line(name: str, r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (name, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, (name, r.stderr)
    assert needle in r.stderr, (name, r.stderr)


def test_read_only_outputs(project):
    with read_only_dir(project) as ro:
        rel = ro.relative_to(project)
        cases = {"quantize": ["quantize", "-o", f"{rel}/q"],
                 "export cpu": ["export", "--target", "cpu", "-o", f"{rel}/x"],
                 "export onnx default dir": ["export", "--target", "onnx", "-o", f"{rel}/sub/y"],
                 "init": ["init", f"{rel}/project"]}
        results = run_all(cases, project)
        for name, r in results.items():
            assert_one_line(name, r, str(rel))
            assert ("read-only file system" in r.stderr) or ("permission denied" in r.stderr), r.stderr
        assert list(ro.iterdir()) == []


def test_full_disk_quantize_and_export_leave_nothing(project):
    with full_disk(project, kib=24) as (small, preexec):
        rel = small.relative_to(project)
        cases = {"quantize": ["quantize", "-o", f"{rel}/q", "--float-dtype", "float32"],
                 "export cpu": ["export", "--target", "cpu", "-o", f"{rel}/x"]}
        for name, r in run_all(cases, project, preexec).items():
            assert_one_line(name, r, str(rel))
            assert any(w in r.stderr for w in ("no space left", "file too large")), r.stderr
        assert leftovers(small) == [] and not (small / "q").exists() and not (small / "x").exists()
    assert not (project / "exports" / "cpu" / "latest").exists()


def test_impossible_flags_and_paths(project):
    cases = {"export onto a file": ["export", "--target", "cpu", "-o", "a-file"],
             "quantize under a file": ["quantize", "-o", "a-file/q"],
             "serve port 70000": ["serve", "--port", "70000"],
             "serve port -1": ["serve", "--port", "-1"],
             "eval batch 0": ["eval", "--data", "embedded", "--batch-size", "0"]}
    needles = {"export onto a file": "a-file", "quantize under a file": "a-file",
               "serve port 70000": "--port 70000", "serve port -1": "--port -1", "eval batch 0": "--batch-size"}
    for name, r in run_all(cases, project).items():
        assert_one_line(name, r, needles[name])
    assert (project / "a-file").read_text() == "not a directory\n"


@pytest.mark.slow
def test_train_on_a_full_disk_removes_its_checkpoint(tmp_path):
    recipe = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
    with full_disk(tmp_path, kib=300) as (small, preexec):
        r = subprocess.run([MMFREE, "train", str(recipe), "train.max_steps=2", "checkpoint.every_steps=1",
                            "eval.every_steps=0", "logging.tensorboard=false", "logging.plot=false",
                            "logging.progress=false", "train.sample_prompt=", f"train.output_dir={small}"],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600, preexec_fn=preexec)
        assert_one_line("train", r, str(small))
        assert leftovers(small) == []
        assert not list(small.rglob("step-*"))


def test_train_into_a_read_only_directory(tmp_path):
    recipe = Path(__file__).parents[1] / "recipes" / "tiny.yaml"
    with read_only_dir(tmp_path) as ro:
        r = subprocess.run([MMFREE, "train", str(recipe), f"train.output_dir={ro}/runs"], cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert_one_line("train", r, str(ro))
