"""`mmfree export --target T`: one module per target, each with
`export(model_dir: Path, out_dir: Path, **options) -> None` that fills `out_dir`.

This module resolves the model (the newest run by default), picks the output directory
(`exports/<target>/<model>-<time>/` unless given), builds it under a temporary name so a failed
export leaves nothing half-written, renames it into place and points `exports/<target>/latest` at it.
Every export writes a `manifest.json` with `"target": <target>` (the engines' auto pick reads it).
"""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_dir
from ..paths import EXPORTS_DIR, model_name, point_latest, resolve_model

TARGETS: dict[str, str] = {
    "cuda": "mmfree_cli.export.cuda",
    "cpu": "mmfree_cli.export.cpu",
    "onnx": "mmfree_cli.export.onnx",
    "fpga": "mmfree_cli.export.fpga",
}


def run_export(target: str, model: str | Path | None = None, out: str | Path | None = None,
               root: str | Path = ".", **options) -> Path:
    """Export `model` (default: newest run) for `target`; returns the export directory."""
    if target not in TARGETS:
        raise UserError(f"unknown export target {target!r} — choose one of {', '.join(TARGETS)}")
    try:
        module = importlib.import_module(TARGETS[target])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("mmfree_cli"):
            raise UserError(f"export target {target!r} is not available in this build") from None
        raise
    model_dir = resolve_model(model, root)
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(root) / EXPORTS_DIR / target / f"{model_name(model_dir, drop_time=True)}-{stamp}"
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty — choose another -o or remove it")
    with atomic_dir(out) as tmp:
        module.export(model_dir, tmp, **options)
    if out.parent.name == target and out.parent.parent.name == EXPORTS_DIR:
        point_latest(out)
    return out
