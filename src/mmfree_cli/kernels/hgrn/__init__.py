"""The HGRN element-wise linear recurrence. `hgrn_scan` picks the kernel by device.

CUDA tensors in float32/bfloat16/float16 go to the Triton kernels (fused recurrent for short
sequences, chunked scan otherwise); anything else (CPU, float64) to the PyTorch twin.
"""

from __future__ import annotations

import torch

from .naive import hgrn_recurrent_naive, hgrn_scan_naive

__all__ = ["hgrn_scan", "hgrn_scan_naive", "hgrn_recurrent_naive", "RECURRENT_MAX_T"]

RECURRENT_MAX_T = 64
"""Up to this many steps the one-pass recurrent kernel is used; beyond, the chunked scan."""

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

USE_TRITON = True
"""False sends CUDA tensors to the PyTorch twin too (bench/train_step.py compares the two paths)."""


def hgrn_scan(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = f_t ⊙ h_{t-1} + i_t. i, f: [B, T, D]; h0: [B, D] or None → (h: [B, T, D], h_T: [B, D])."""
    if i.shape != f.shape or i.dim() != 3:
        raise ValueError(f"hgrn_scan: i and f must both be [B, T, D], got {tuple(i.shape)} and {tuple(f.shape)}")
    if USE_TRITON and i.is_cuda and i.dtype in _TRITON_DTYPES:
        if i.shape[1] <= RECURRENT_MAX_T:
            from .fused_recurrent import hgrn_fused_recurrent
            h, last = hgrn_fused_recurrent(i, f, h0)
        else:
            from .chunk import hgrn_chunk
            h, last = hgrn_chunk(i, f, h0)
        return h.to(i.dtype), last.to(i.dtype)
    return hgrn_scan_naive(i, f, h0)
