"""Where the newest run and export live, so commands work with no paths typed.

`runs/<name>/` and `exports/<target>/<name>/` hold artifacts; `runs/latest` and
`exports/<target>/latest` are symlinks to the newest, replaced atomically when one is written.
"""

from __future__ import annotations

import os
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
    return _newest(Path(root) / RUNS_DIR, "run", "mmfree train recipes/tiny.yaml")


def latest_export(target: str, root: str | Path = ".") -> Path:
    return _newest(Path(root) / EXPORTS_DIR / target, f"{target} export", f"mmfree export --target {target}")


def resolve_model(model: str | Path | None, root: str | Path = ".") -> Path:
    """The model directory a command should use: the one given, else the newest run."""
    if model is None:
        return latest_run(root)
    path = Path(model)
    if not path.exists():
        raise UserError(f"{path}: not found — give a run, export or model directory")
    return path.resolve()
