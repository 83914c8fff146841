"""The state of run directories, read from what is on disk (no registry to go stale).

    finished     summary.json is there (the trainer writes it last, with the final weights)
    running      a live process holds the run's lock file (`.running`, its pid)
    interrupted  it stopped (killed, crashed) after a checkpoint: model.safetensors holds the
                 weights of that checkpoint, `--resume` continues it
    no weights   it stopped before its first checkpoint: nothing to load

`runs/latest` only ever points at runs with weights (see `train.checkpoints.publish`), so a run
killed in its first minutes never hides the last good one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

SUMMARY_FILE = "summary.json"
WEIGHTS_FILE = "model.safetensors"
LOCK_FILE = ".running"
RECIPE_FILE = "recipe.yaml"


@dataclass
class RunInfo:
    path: Path
    state: str            # finished | running | interrupted | no weights
    step: int | None      # last step with weights (finished: the final step)
    val_loss: float | None
    modified: float       # seconds since the epoch

    @property
    def has_weights(self) -> bool:
        return self.state in ("finished", "interrupted") or (self.path / WEIGHTS_FILE).is_file()

    def age(self, now: float | None = None) -> str:
        seconds = max(0.0, (now or time.time()) - self.modified)
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return f"{seconds / size:.0f} {unit}"
        return f"{seconds:.0f} s"


def is_run_dir(path: Path) -> bool:
    """A training run (its recipe), or a model directory someone put under runs/."""
    return (path / RECIPE_FILE).is_file() or (path / "config.json").is_file()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_pid(run_dir: Path) -> int | None:
    """The pid of a live process training this run, if any."""
    try:
        pid = int((run_dir / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _last_val_loss(run_dir: Path) -> float | None:
    """The newest val_loss in metrics.jsonl (read from the end: the file can be long)."""
    path = run_dir / "metrics.jsonl"
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "val_loss" in entry:
            return float(entry["val_loss"])
    return None


def _checkpoint_step(run_dir: Path) -> int | None:
    """The step of the newest checkpoint (whose weights model.safetensors holds)."""
    steps = [int(p.name[5:]) for p in (run_dir / "checkpoints").glob("step-*") if p.name[5:].isdigit()]
    return max(steps, default=None)


def run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    summary = _read_json(run_dir / SUMMARY_FILE)
    modified = max((p.stat().st_mtime for p in (run_dir, run_dir / WEIGHTS_FILE, run_dir / "metrics.jsonl")
                    if p.exists()), default=0.0)
    if summary or not (run_dir / RECIPE_FILE).is_file():  # finished, or a model directory, not a run
        return RunInfo(run_dir, "finished", summary.get("steps"), summary.get("val_loss"), modified)
    step = _checkpoint_step(run_dir) if (run_dir / WEIGHTS_FILE).is_file() else None
    if holder_pid(run_dir) is not None:
        state = "running"
    else:
        state = "interrupted" if (run_dir / WEIGHTS_FILE).is_file() else "no weights"
    return RunInfo(run_dir, state, step, _last_val_loss(run_dir), modified)


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Every run directory under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [run_info(p) for p in root.iterdir() if p.is_dir() and not p.is_symlink() and is_run_dir(p)]
    return sorted(found, key=lambda r: r.modified)


def newest_with_weights(root: str | Path = "runs", finished_only: bool = False) -> RunInfo | None:
    good = [r for r in list_runs(root) if (r.state == "finished" if finished_only else r.has_weights)]
    return good[-1] if good else None


def unfinished_note(run_dir: Path) -> str:
    """'RUN is unfinished (STATE) …' naming the newest finished run, for errors that meet such a run."""
    info = run_info(run_dir)
    newest = newest_with_weights(run_dir.parent, finished_only=True)
    pick = f"the newest finished run is {newest.path}" if newest else "no run has finished yet"
    return f"{run_dir} is an unfinished run ({info.state}, no weights yet) — {pick}"
