"""Bit layouts for ternary weights: `i2` (2 bits), `tq1` (1.6 bits) and Hugging Face `hf-bitnet`.

Every layout stores the *code* `c = w + 1` of a ternary weight `w ∈ {-1, 0, +1}`, so `c ∈ {0, 1, 2}`,
and pads with code 1 (weight 0): a padded slot never changes a dot product, and an unpacker that
forgets to slice the padding away still computes the right result.

    i2         [..., K]  → [..., ceil(K/4)]   uint8, packed along the LAST (input, K) dim.
               Byte j holds elements 4j..4j+3; element 4j+i sits in bits 2i..2i+1
               (element 4j in the two least significant bits):
                   byte = c[4j] | c[4j+1] << 2 | c[4j+2] << 4 | c[4j+3] << 6
               K is padded up to a multiple of 4 with code 1. Code 3 never occurs.

    tq1        [..., K]  → [..., ceil(K/5)]   uint8, packed along the LAST dim, base 3.
               Byte j holds elements 5j..5j+4, element 5j at the least significant trit:
                   byte = c[5j] + 3·c[5j+1] + 9·c[5j+2] + 27·c[5j+3] + 81·c[5j+4]   (0..242)
               K is padded up to a multiple of 5 with code 1. Bytes 243..255 never occur.

    hf-bitnet  [N, K]    → [ceil(N/4), K]     uint8, four planes along the FIRST (output, N) dim,
               as `transformers.integrations.bitnet`: with R = ceil(N/4), row r of the packed
               tensor holds output rows r, R+r, 2R+r, 3R+r; row iR+r sits in bits 2i..2i+1:
                   packed[r, k] = c[r, k] | c[R+r, k] << 2 | c[2R+r, k] << 4 | c[3R+r, k] << 6
               N is padded up to 4R with code 1 (transformers itself pads with code 0, i.e. -1;
               its unpacker returns 4R rows either way, which we slice back to N).

Every function accepts a torch tensor (any device) or a numpy array and returns the same kind.
`pack_*` take codes as any integer or float dtype holding -1/0/+1; `unpack_*` return int8 -1/0/+1.
Bad values raise ValueError (a programming error); file readers turn that into a UserError.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

LAYOUTS = ("i2", "tq1", "hf-bitnet")
"""Layout names, as written in a packed file's `__metadata__` and accepted by `--layout`."""

PAD_CODE = 1
"""Code of padding slots: weight 0."""

_I2_PER_BYTE = 4
_TQ1_PER_BYTE = 5
_POW3 = (1, 3, 9, 27, 81)
_TQ1_MAX = 3 ** _TQ1_PER_BYTE - 1  # 242


def _as_torch(x) -> tuple[torch.Tensor, bool]:
    """(tensor, came_from_numpy)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _back(t: torch.Tensor, numpy: bool):
    return t.cpu().numpy() if numpy else t


def _codes(w: torch.Tensor) -> torch.Tensor:
    """Ternary weights → uint8 codes w+1, refusing anything that is not -1/0/+1."""
    if w.dtype == torch.bool or w.dtype.is_complex:
        raise ValueError(f"ternary weights must be -1/0/+1 numbers, got dtype {w.dtype}")
    # test on the original values: casting 0.5 or 300 to an integer first would hide them
    if w.numel() and not bool(((w == -1) | (w == 0) | (w == 1)).all()):
        raise ValueError("ternary weights must hold only -1, 0 and +1")
    return (w.to(torch.int16) + 1).to(torch.uint8)


def _pad_last(c: torch.Tensor, multiple: int) -> torch.Tensor:
    pad = (-c.shape[-1]) % multiple
    if pad:
        fill = torch.full((*c.shape[:-1], pad), PAD_CODE, dtype=c.dtype, device=c.device)
        c = torch.cat([c, fill], dim=-1)
    return c


def _check_packed(p: torch.Tensor, n: int, per_byte: int, dim: int, name: str) -> None:
    if p.dtype != torch.uint8:
        raise ValueError(f"{name}: packed weights must be uint8, got {p.dtype}")
    if p.dim() == 0:
        raise ValueError(f"{name}: packed weights must have at least one dimension")
    size = p.shape[dim]
    if not (size - 1) * per_byte < n <= size * per_byte:  # exactly the padding of one byte at most
        raise ValueError(f"{name}: {size} packed bytes along dim {dim} cannot hold {n} weights")


def pack_i2(codes):
    """Ternary [..., K] → uint8 [..., ceil(K/4)], four 2-bit codes w+1 per byte along K (see module doc)."""
    w, numpy = _as_torch(codes)
    if w.dim() == 0:
        raise ValueError("pack_i2: need at least one dimension")
    c = _pad_last(_codes(w), _I2_PER_BYTE)
    c = c.reshape(*c.shape[:-1], -1, _I2_PER_BYTE)  # [..., K/4, 4]
    packed = c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)
    return _back(packed.contiguous(), numpy)


def unpack_i2(packed, k: int):
    """uint8 [..., ceil(k/4)] → int8 [..., k] of -1/0/+1; inverse of `pack_i2`, padding dropped."""
    p, numpy = _as_torch(packed)
    _check_packed(p, k, _I2_PER_BYTE, -1, "unpack_i2")
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=p.device)
    c = (p.unsqueeze(-1) >> shifts) & 3  # [..., K/4, 4]
    if p.numel() and bool((c == 3).any()):
        raise ValueError("unpack_i2: code 3 is not a ternary weight (corrupt data?)")
    w = c.reshape(*p.shape[:-1], -1)[..., :k].to(torch.int8) - 1
    return _back(w.contiguous(), numpy)


def pack_tq1(codes):
    """Ternary [..., K] → uint8 [..., ceil(K/5)], five base-3 trits w+1 per byte along K (see module doc)."""
    w, numpy = _as_torch(codes)
    if w.dim() == 0:
        raise ValueError("pack_tq1: need at least one dimension")
    c = _pad_last(_codes(w), _TQ1_PER_BYTE)
    c = c.reshape(*c.shape[:-1], -1, _TQ1_PER_BYTE).to(torch.int16)  # [..., K/5, 5]
    powers = torch.tensor(_POW3, dtype=torch.int16, device=c.device)
    packed = (c * powers).sum(-1).to(torch.uint8)
    return _back(packed.contiguous(), numpy)


def unpack_tq1(packed, k: int):
    """uint8 [..., ceil(k/5)] → int8 [..., k] of -1/0/+1; inverse of `pack_tq1`, padding dropped."""
    p, numpy = _as_torch(packed)
    _check_packed(p, k, _TQ1_PER_BYTE, -1, "unpack_tq1")
    if p.numel() and bool((p > _TQ1_MAX).any()):
        raise ValueError(f"unpack_tq1: byte above {_TQ1_MAX} is not five trits (corrupt data?)")
    powers = torch.tensor(_POW3, dtype=torch.int16, device=p.device)
    c = (p.to(torch.int16).unsqueeze(-1) // powers) % 3  # [..., K/5, 5]
    w = c.reshape(*p.shape[:-1], -1)[..., :k].to(torch.int8) - 1
    return _back(w.contiguous(), numpy)


def pack_hf_bitnet(codes):
    """Ternary [N, K] → uint8 [ceil(N/4), K]: the transformers `bitnet` planes (see module doc)."""
    w, numpy = _as_torch(codes)
    if w.dim() != 2:
        raise ValueError(f"pack_hf_bitnet: need a 2-D [out, in] weight, got shape {tuple(w.shape)}")
    c = _pad_last(_codes(w).T, _I2_PER_BYTE).T  # pad rows: [4R, K]
    planes = c.reshape(_I2_PER_BYTE, -1, c.shape[-1])  # [4, R, K]: plane i = rows iR..iR+R-1
    packed = planes[0] | (planes[1] << 2) | (planes[2] << 4) | (planes[3] << 6)
    return _back(packed.contiguous(), numpy)


def unpack_hf_bitnet(packed, n: int):
    """uint8 [ceil(n/4), K] → int8 [n, K] of -1/0/+1; inverse of `pack_hf_bitnet`, padding dropped."""
    p, numpy = _as_torch(packed)
    if p.dim() != 2:
        raise ValueError(f"unpack_hf_bitnet: need a 2-D packed weight, got shape {tuple(p.shape)}")
    _check_packed(p, n, _I2_PER_BYTE, 0, "unpack_hf_bitnet")
    planes = torch.stack([(p >> s) & 3 for s in (0, 2, 4, 6)])  # [4, R, K]
    if p.numel() and bool((planes == 3).any()):
        raise ValueError("unpack_hf_bitnet: code 3 is not a ternary weight (corrupt data?)")
    w = planes.reshape(-1, p.shape[-1])[:n].to(torch.int8) - 1
    return _back(w.contiguous(), numpy)


def packed_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape of the packed uint8 tensor for ternary weights of `shape` in `layout`."""
    if layout == "i2":
        return (*shape[:-1], -(-shape[-1] // _I2_PER_BYTE))
    if layout == "tq1":
        return (*shape[:-1], -(-shape[-1] // _TQ1_PER_BYTE))
    if layout == "hf-bitnet":
        return (-(-shape[0] // _I2_PER_BYTE), *shape[1:])
    raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")


def pack(codes, layout: str):
    """Pack ternary weights in the named layout."""
    return _packer(layout)[0](codes)


def unpack(packed, layout: str, shape: tuple[int, ...]):
    """Unpack to int8 ternary weights of the original `shape` (which says how much was padding)."""
    _, unpacker, padded_dim = _packer(layout)
    w = unpacker(packed, shape[padded_dim])
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{layout}: packed tensor unpacks to {tuple(w.shape)}, expected {tuple(shape)}")
    return w


def _packer(layout: str) -> tuple[Callable, Callable, int]:
    table = {"i2": (pack_i2, unpack_i2, -1), "tq1": (pack_tq1, unpack_tq1, -1),
             "hf-bitnet": (pack_hf_bitnet, unpack_hf_bitnet, 0)}
    if layout not in table:
        raise ValueError(f"unknown layout {layout!r}; one of {', '.join(LAYOUTS)}")
    return table[layout]
