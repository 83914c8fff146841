"""`mmfree export --target cuda`: what the cuda engine (`engines/cuda.py`) loads (the directory's
layout: `formats.cuda`). The source may be a run directory (latent weights, ternarised once) or a
`mmfree quantize` output (its codes and β as stored)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..formats.cuda import write_cuda_export
from ..formats.ternary import open_ternary


def export(model_dir: Path, out_dir: Path, **options) -> None:
    """Fill `out_dir` with the cuda engine's files (see `formats.cuda`)."""
    if options:
        raise UserError(f"export --target cuda takes no options {', '.join(sorted(options))}")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json — give a run or model directory (e.g. runs/latest)")
    write_cuda_export(out_dir, open_ternary(model_dir), model_dir)
