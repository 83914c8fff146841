"""int8 activations × 2-bit packed ternary weights (W1.58A8 inference). `ternary_gemm` picks the
kernel by device: the Triton kernel (`packed.py`) for CUDA tensors, else the PyTorch twin."""

from __future__ import annotations

import torch

from .naive import ternary_gemm_naive, unpack_i2_codes

__all__ = ["ternary_gemm", "ternary_gemm_naive", "unpack_i2_codes"]


def ternary_gemm(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                 out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """q int8 [G, M, K], s [G, M], packed uint8 [N, ceil(K/4)], β [G] → float32 [M, N] (see naive.py)."""
    if q.dim() != 3 or s.shape != q.shape[:2] or packed.shape[0] % q.shape[0] or beta.shape != (q.shape[0],):
        raise ValueError(f"ternary_gemm: shapes q {tuple(q.shape)}, s {tuple(s.shape)}, packed "
                         f"{tuple(packed.shape)}, beta {tuple(beta.shape)} do not fit")
    if q.is_cuda:
        from .packed import ternary_gemm_packed
        return ternary_gemm_packed(q, s, packed, beta, out, accumulate)
    return ternary_gemm_naive(q, s, packed, beta, out, accumulate)
