"""Where the newest run and export live, so commands work with no paths typed.

`runs/<name>/` and `exports/<target>/<name>/` hold artifacts; `runs/latest` and
`exports/<target>/latest` are symlinks to the newest, replaced atomically when one is written
(a run's only once it has weights: see `runs`). `resolve_model` is the one place a model argument
becomes a directory: a local path, a Hugging Face Hub id (`org/name[@rev]`, via `hub`), or the
newest run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

RUNS_DIR = "runs"
EXPORTS_DIR = "exports"
LATEST = "latest"


def point_latest(target: str | Path) -> Path:
    """Make `<parent of target>/latest` a symlink to `target`, atomically."""
    target = Path(target)
    link = target.parent / LATEST
    tmp = target.parent / f".{LATEST}.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target.name, tmp)
    os.replace(tmp, link)
    return link


def _newest(parent: Path, what: str, hint: str) -> Path:
    link = parent / LATEST
    if link.exists():
        return link.resolve()
    candidates = [p for p in parent.iterdir() if p.is_dir() and p.name != LATEST] if parent.is_dir() else []
    if not candidates:
        raise UserError(f"no {what} in {parent}/ — try `{hint}`")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def latest_run(root: str | Path = ".") -> Path:
    """`runs/latest`, else the newest run with weights; unfinished runs without weights are named."""
    from .runs import list_runs, newest_with_weights, unfinished_note
    parent = Path(root) / RUNS_DIR
    link = parent / LATEST
    if link.exists() and _has_weights(link.resolve()):
        return link.resolve()
    newest = newest_with_weights(parent)
    if newest is not None:
        return newest.path.resolve()
    runs = list_runs(parent)
    if runs:
        raise UserError(unfinished_note(runs[-1].path) + " — wait for its first checkpoint, or "
                        "`mmfree train recipes/tiny.yaml`")
    raise UserError(f"no run in {parent}/ — try `mmfree train recipes/tiny.yaml`")


def _has_weights(path: Path) -> bool:
    from .model.checkpoint import INDEX_NAME, WEIGHTS_NAME
    return (path / WEIGHTS_NAME).is_file() or (path / INDEX_NAME).is_file() or (path / "manifest.json").is_file()


def latest_export(target: str, root: str | Path = ".") -> Path:
    return _newest(Path(root) / EXPORTS_DIR / target, f"{target} export", f"mmfree export --target {target}")


def resolve_model(model: str | Path | None, root: str | Path = ".") -> Path:
    """The model directory a command should use: the one given (a path, or a Hub id fetched
    into the Hub cache), else the newest run with weights."""
    from . import hub
    from .runs import unfinished_note
    if model is None:
        return latest_run(root)
    path = Path(model).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir() and (path / "recipe.yaml").is_file() and not _has_weights(path):
            raise UserError(unfinished_note(path))
        return path
    if hub.looks_like_hub_id(str(model)):
        return hub.fetch_model(str(model))
    raise UserError(f"{model}: not found — give a run, export or model directory, or a Hugging Face "
                    "model id (org/name[@revision])")


_RUN_STAMP = re.compile(r"-\d{8}-\d{6}(-\d+)?$")


def model_name(path: str | Path, drop_time: bool = False) -> str:
    """The name an artifact made from model `path` carries: a Hub snapshot's repo name (its own
    directory is a commit hash), else the directory's name; `drop_time` strips a run's
    `-YYYYmmdd-HHMMSS` so an export named `<model>-<its own time>` has one timestamp."""
    from .hub import display_name
    path = Path(path)
    name = display_name(path.resolve() if path.name == LATEST else path)
    return _RUN_STAMP.sub("", name) if drop_time else name
