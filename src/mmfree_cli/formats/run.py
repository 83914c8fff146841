"""Run directories and reference checkpoints: config.json + model.safetensors (+ tokenizer).

A run (`runs/<name>/`, written by `mmfree train`) is in the reference checkpoint layout, so a run
and a released MMfreeLM checkpoint read the same way (`model.checkpoint`). What marks a run is its
weights' safetensors metadata: `mmfree.format: mmfree-run` and `mmfree.format_version`. A
checkpoint without the marker (a reference one, or a run from before the marker) reads as
version 1; a run of a version this mmfree does not know is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..model.checkpoint import INDEX_NAME, WEIGHTS_NAME

FORMAT = "mmfree-run"
FORMAT_VERSION = 1
META_FORMAT, META_VERSION = "mmfree.format", "mmfree.format_version"
REMAKE = "train it again with this mmfree (`mmfree train`) or upgrade mmfree"


def metadata() -> dict[str, str]:
    """The safetensors metadata a run's model.safetensors carries (see `model.save_pretrained`)."""
    return {META_FORMAT: FORMAT, META_VERSION: str(FORMAT_VERSION)}


def weight_files(path: Path) -> list[Path]:
    """The safetensors file(s) of a run or checkpoint directory (sharded ones through the index)."""
    if (path / WEIGHTS_NAME).is_file():
        return [path / WEIGHTS_NAME]
    if (path / INDEX_NAME).is_file():
        try:
            index = json.loads((path / INDEX_NAME).read_text())
            return [path / s for s in sorted(set(index["weight_map"].values()))]
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            return []  # model.checkpoint.read_state_dict names the problem
    return []


def check_run(path: str | Path) -> None:
    """Refuse a run directory whose weights were written in a run format this mmfree does not read."""
    from safetensors import safe_open
    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json — give a run or model directory (e.g. runs/latest)")
    for file in weight_files(path):
        try:
            with safe_open(str(file), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception:  # unreadable header: the loader names the file and the problem
            return
        if meta.get(META_FORMAT, FORMAT) != FORMAT:
            continue  # another tool's marker: the reference layout is all we need
        version = meta.get(META_VERSION, str(FORMAT_VERSION))
        if version != str(FORMAT_VERSION):
            raise UserError(f"{file}: {FORMAT} format_version {version} is not one this mmfree reads "
                            f"({FORMAT_VERSION}) — {REMAKE}")
