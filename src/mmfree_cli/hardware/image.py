"""The card's weight image: ternary matrices as streams of LANES-wide 2-bit code words.

Layout (recorded in the bundle manifest as `weight_layout: "mmf-rows-v1"`):

- a matrix W[N, K] with w in {-1, 0, +1} is stored row after row; each row is K padded with zeros
  up to a multiple of LANES, cut into words of LANES codes;
- code = w + 1 (0 -> -1, 1 -> 0, 2 -> +1), lane l of a word at bits [2l+1 : 2l], so a word is
  2·LANES bits and the memory word of the core (MEM_W = 2·LANES);
- words are little-endian in the file; every block (one matrix or one table) starts on a 4 KiB
  boundary, so a DMA of one block never straddles a page another block shares.

This is its own layout, not `quant.packing`'s 2-bit layout (that one packs 4 codes a byte along K
for CPU/GPU kernels): the card wants one row-chunk per memory beat.
"""

from __future__ import annotations

import numpy as np

BLOCK_ALIGN = 4096
LAYOUT = "mmf-rows-v1"


def padded(k: int, lanes: int) -> int:
    """K rounded up to a multiple of LANES."""
    return -(-k // lanes) * lanes


def pack_ternary_rows(w: np.ndarray, lanes: int) -> bytes:
    """W[N, K] in {-1, 0, +1} -> the row-major stream of 2·LANES-bit words, as bytes."""
    w = np.asarray(w)
    if w.ndim != 2 or not np.isin(w, (-1, 0, 1)).all():
        raise ValueError("pack_ternary_rows wants a 2-D array of -1/0/+1")
    n, k = w.shape
    codes = np.ones((n, padded(k, lanes)), dtype=np.uint8)   # code 1 = weight 0
    codes[:, :k] = (w + 1).astype(np.uint8)
    # 4 codes a byte, lane 0 in the low bits: byte j of a word holds lanes 4j..4j+3
    quads = codes.reshape(n, -1, 4)
    packed = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    return packed.astype(np.uint8).tobytes()


def unpack_ternary_rows(data: bytes, n: int, k: int, lanes: int) -> np.ndarray:
    """Inverse of `pack_ternary_rows` (for checks and the emulated card)."""
    kp = padded(k, lanes)
    raw = np.frombuffer(data, dtype=np.uint8, count=n * kp // 4).reshape(n, kp // 4)
    codes = np.stack([(raw >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(n, kp)
    w = codes.astype(np.int8) - 1
    w[codes == 3] = 0
    return w[:, :k]


def words(data: bytes, lanes: int) -> list[int]:
    """Bytes of a stream -> the list of 2·LANES-bit words, as Python ints (for testbenches)."""
    step = 2 * lanes // 8
    return [int.from_bytes(data[i:i + step], "little") for i in range(0, len(data), step)]


def align(n: int, to: int = BLOCK_ALIGN) -> int:
    return -(-n // to) * to
