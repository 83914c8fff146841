"""`mmfree init`: scaffold a project from the files the package ships.

    <dir>/recipes/*.yaml        the training recipes (tiny, 370m, 1.3b, 2.7b, ...)
    <dir>/accelerate/*.yaml     accelerate configs for multi-GPU DDP and FSDP
    <dir>/README.md             how to train, resume, launch on several GPUs

Existing files are never overwritten without `force`; the check happens before anything is
written, so a refused init leaves the directory as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import UserError
from .fileio import atomic_path
from .resources import recipes_dir, templates_dir


def scaffold_files() -> dict[str, Path]:
    """Destination (relative to the project) → shipped source file."""
    files = {f"recipes/{p.name}": p for p in sorted(recipes_dir().glob("*.yaml"))}
    files.update({f"accelerate/{p.name}": p for p in sorted((templates_dir() / "accelerate").glob("*.yaml"))})
    files["README.md"] = templates_dir() / "init" / "README.md"
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing or not any(k.startswith("recipes/") for k in files):
        raise UserError(f"the installed package lacks its scaffold files ({', '.join(missing) or 'recipes'}) — reinstall mmfree-cli")
    return files


def init_project(directory: str | Path = ".", force: bool = False) -> list[str]:
    """Copy the scaffold into `directory`; returns the files written (relative paths)."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a directory — pick another name")
    files = scaffold_files()
    clashes = [rel for rel in files if (root / rel).exists()]
    if clashes and not force:
        raise UserError(f"{root}: would overwrite {', '.join(clashes)} — pass --force to replace them, or pick an empty directory")
    for rel, source in files.items():
        with atomic_path(root / rel) as tmp:
            shutil.copyfile(source, tmp)
    return list(files)
