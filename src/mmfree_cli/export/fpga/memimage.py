"""$readmemh images of the core's constant tables (the integer spec's sigmoid and rsqrt tables).

The tables are ROMs inside the core, not data in card memory: every model uses the same ones
(intspec pins them by digest), so the build carries them and the weight image does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...fileio import write_text
from ...quant.intspec import RSQRT_TABLE, SIGMOID_TABLE

TABLES = {"sigmoid.hex": (SIGMOID_TABLE, 21), "rsqrt.hex": (RSQRT_TABLE, 17)}
"""file name -> (table, bits per entry): all entries are non-negative."""


def hex_image(values: np.ndarray, bits: int) -> str:
    digits = -(-bits // 4)
    if values.min() < 0 or values.max() >= 1 << bits:
        raise ValueError(f"table does not fit {bits} unsigned bits")
    return "".join(f"{int(v):0{digits}x}\n" for v in values)


def write_tables(out_dir: Path) -> list[Path]:
    """Write every table image into out_dir; returns the paths."""
    paths = []
    for name, (table, bits) in TABLES.items():
        write_text(out_dir / name, hex_image(table, bits))
        paths.append(out_dir / name)
    return paths
