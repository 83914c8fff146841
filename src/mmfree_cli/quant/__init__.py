"""Ternary and integer math, no file formats and no engines: bit layouts (`packing`), int8 rows
(`rowint8`), the ternary model (`ternary`), the integer spec (`intspec`), the integer-model builder
(`intmodel`) and the numpy integer reference (`intref`). Files live in `formats/`.

`packing` is plain tensor code with no model imports, so engines and exporters can use it freely.
"""

from .packing import (
                      LAYOUTS,
                      pack,
                      pack_hf_bitnet,
                      pack_i2,
                      pack_tq1,
                      packed_shape,
                      unpack,
                      unpack_hf_bitnet,
                      unpack_i2,
                      unpack_tq1,
)

__all__ = ["LAYOUTS", "pack", "unpack", "packed_shape", "pack_i2", "unpack_i2", "pack_tq1",
           "unpack_tq1", "pack_hf_bitnet", "unpack_hf_bitnet"]
