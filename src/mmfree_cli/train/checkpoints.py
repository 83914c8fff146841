"""Atomic training checkpoints: runs/<name>/checkpoints/step-NNNNNNN/.

A checkpoint holds `model.safetensors` + `config.json` in the reference layout (checksummed, so
a checkpoint is itself a loadable model directory), the accelerate state (optimizer, RNG; loaded
back with `weights_only=True`; accelerate has each process write its own RNG file, the one file a
non-main process writes) and `trainer_state.json` (step, tokens seen). It is assembled in
a hidden temporary directory and renamed into place, so a crash mid-save leaves the previous
checkpoint intact and never a torn one.

Each checkpoint's weights are then published as the run's own `model.safetensors` (a hard link,
so no copy; replaced atomically) and `runs/latest` moves to the run: from its first checkpoint on,
a run is a loadable model directory, and before it `latest` keeps naming the last run with weights.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import UserError
from ..fileio import load_safetensors, read_json, write_json
from ..model import save_pretrained

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:07d}"


def save(accelerator, model, run_dir: Path, step: int, state: dict, keep_last: int) -> Path:
    """Collective: every process calls it. Rank 0 writes the model files, state and renames."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        # replaces accelerate's plain model.safetensors with the checksummed reference layout
        save_pretrained(accelerator.unwrap_model(model), tmp)
        write_json(tmp / STATE_FILE, {**state, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        publish(run_dir, final)
        _prune(run_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def publish(run_dir: Path, checkpoint: Path) -> None:
    """Make `checkpoint`'s weights the run's model.safetensors and point `latest` at the run."""
    from ..paths import point_latest
    target, tmp = run_dir / "model.safetensors", run_dir / ".model.safetensors.link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(checkpoint / "model.safetensors", tmp)
    except OSError:  # a file system without hard links: copy
        shutil.copyfile(checkpoint / "model.safetensors", tmp)
    os.replace(tmp, target)
    point_latest(run_dir)


def _prune(run_dir: Path, keep_last: int) -> None:
    for old in all_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def all_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file())


def latest(run_dir: Path) -> Path | None:
    found = all_checkpoints(run_dir)
    return found[-1] if found else None


def load(accelerator, checkpoint: Path) -> dict:
    """Restore model, optimizer and RNG from `checkpoint` into the prepared objects; return the trainer state."""
    if not (checkpoint / STATE_FILE).is_file():
        raise UserError(f"{checkpoint}: not a training checkpoint (no {STATE_FILE}) — give a run directory "
                        f"or one of its {CHECKPOINTS}/step-* directories")
    load_safetensors(checkpoint / "model.safetensors")  # names the file if it is corrupt
    accelerator.load_state(str(checkpoint))
    return read_json(checkpoint / STATE_FILE)
