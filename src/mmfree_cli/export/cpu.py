"""`mmfree export --target cpu`: the integer model of docs/integer-spec.md, ready for `--engine cpu`
(the directory's layout: `formats.intmodel`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..formats.intmodel import write_int_model
from ..formats.ternary import open_ternary
from ..quant.intmodel import int_model


def export(model_dir: Path, out_dir: Path, **options) -> None:
    """Fill `out_dir` with the integer model of `model_dir` (a run, checkpoint or packed directory)."""
    unknown = sorted(k for k, v in options.items() if v is not None)
    if unknown:
        raise UserError(f"export --target cpu takes no {', '.join('--' + k for k in unknown)} option")
    write_int_model(out_dir, int_model(open_ternary(model_dir)), Path(model_dir))
