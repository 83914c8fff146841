"""Run lifecycle: `runs/latest` only names runs with weights, unfinished runs say so, `--resume
auto` resumes only a run of the same recipe and says what it chose, `mmfree runs` lists states."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train import mmfree, write_recipe


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with one finished run ("good") and one SIGKILLed before its first checkpoint ("killed")."""
    root = tmp_path_factory.mktemp("project")
    recipe = write_recipe(root)
    r = mmfree("train", str(recipe), "train.run_name=good", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (root / "runs" / "latest").resolve().name == "good"
    assert r.stdout.index("run      ") < r.stdout.index("step 1 ")  # the header comes before step 1
    proc = subprocess.Popen([sys.executable, "-m", "mmfree_cli.cli", "train", str(recipe), "train.run_name=killed",
                             "train.max_steps=100000", "checkpoint.every_steps=0", "eval.every_steps=0"],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = root / "runs" / "killed"
    deadline = time.time() + 300
    while not ((killed / "metrics.jsonl").is_file() and (killed / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # training, but before its first checkpoint
    proc.wait()
    assert not (killed / "model.safetensors").exists() and not (killed / "checkpoints").exists()
    return root, recipe


def test_a_run_killed_before_its_first_checkpoint_leaves_latest_alone(project):
    root, _ = project
    assert (root / "runs" / "latest").resolve().name == "good"
    r = mmfree("generate", "ROMEO:", "-n", "8", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["model"]).name == "good"


@pytest.mark.parametrize("args", [["generate", "runs/killed", "x"], ["quantize", "runs/killed"],
                                  ["export", "runs/killed", "--target", "cpu"], ["eval", "runs/killed"]])
def test_errors_that_meet_an_unfinished_run_say_so(project, args):
    root, _ = project
    r = mmfree(*args, cwd=root)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "killed is an unfinished run" in r.stderr and "newest finished run is" in r.stderr
    assert str(root / "runs" / "good") in r.stderr


def test_runs_lists_state_step_and_val_loss(project):
    root, _ = project
    r = mmfree("runs", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    runs = {Path(x["run"]).name: x for x in json.loads(r.stdout)}
    assert runs["good"]["state"] == "finished" and runs["good"]["step"] == 6 and runs["good"]["latest"]
    assert runs["good"]["val_loss"] > 0
    assert runs["killed"]["state"] == "no weights" and runs["killed"]["step"] is None
    table = mmfree("runs", cwd=root).stdout
    assert "good" in table and "← latest" in table and "no weights" in table


def test_resume_auto_with_another_recipe_starts_fresh_and_says_so(project, tmp_path):
    root, recipe = project
    other = root / "other.yaml"
    shutil.copy(recipe, other)
    r = mmfree("train", str(other), "--resume", "auto", "train.max_steps=2", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no unfinished run of other" in r.stdout and "starting a fresh run other-" in r.stdout
    assert "unfinished runs of other recipes are left alone: killed" in r.stdout
    assert not (root / "runs" / "killed" / "summary.json").exists()  # untouched


def test_resume_auto_with_other_settings_starts_fresh_naming_them(project):
    root, recipe = project
    r = mmfree("train", str(recipe), "train.run_name=killed", "optimizer.lr=1e-2", "--resume", "auto", cwd=root)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not resuming killed (killed has other settings (" in r.stderr and "optimizer.lr" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_resume_auto_resumes_the_same_recipe_saying_where(tmp_path):
    recipe = write_recipe(tmp_path)
    r = mmfree("train", str(recipe), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = (tmp_path / "runs" / "latest").resolve()
    (run / "summary.json").unlink()  # as if it had died after its last checkpoint
    r = mmfree("train", str(recipe), "--resume", "auto", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {run.name} at step 6" in r.stdout
    assert (run / "summary.json").is_file()


def test_a_large_recipe_on_the_cpu_is_warned_about():
    import torch

    from mmfree_cli.recipe import load_recipe
    from mmfree_cli.resources import recipes_dir
    from mmfree_cli.train.progress import size_warning
    big = load_recipe(recipes_dir() / "370m.yaml")
    warning = size_warning(370_000_000, big, torch.device("cpu"))
    assert warning and warning.startswith("warning:") and "370M parameters" in warning
    assert size_warning(1_200_000, load_recipe(recipes_dir() / "tiny.yaml"), torch.device("cpu")) is None


def test_with_no_run_the_default_model_is_the_newest_export(tmp_path, monkeypatch):
    from mmfree_cli.errors import UserError
    from mmfree_cli.generate import _newest_run_or_export
    from mmfree_cli.paths import point_latest
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no run in runs/"):
        _newest_run_or_export()
    for target in ("cpu", "onnx"):
        (tmp_path / "exports" / target / f"m-{target}").mkdir(parents=True)
        point_latest(tmp_path / "exports" / target / f"m-{target}")
        time.sleep(0.05)  # distinct modification times
    assert _newest_run_or_export() == (tmp_path / "exports" / "onnx" / "m-onnx").resolve()
