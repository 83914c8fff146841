"""The HGRN element-wise linear recurrence. `hgrn_scan` picks the kernel by device."""

from __future__ import annotations

import torch

from .naive import hgrn_recurrent_naive, hgrn_scan_naive

__all__ = ["hgrn_scan", "hgrn_scan_naive", "hgrn_recurrent_naive"]


def hgrn_scan(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = f_t ⊙ h_{t-1} + i_t. i, f: [B, T, D]; h0: [B, D] or None → (h: [B, T, D], h_T: [B, D])."""
    if i.shape != f.shape or i.dim() != 3:
        raise ValueError(f"hgrn_scan: i and f must both be [B, T, D], got {tuple(i.shape)} and {tuple(f.shape)}")
    return hgrn_scan_naive(i, f, h0)
