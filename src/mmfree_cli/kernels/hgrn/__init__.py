"""The HGRN element-wise linear recurrence. `hgrn_scan` picks the kernel by device.

CUDA tensors in float32/bfloat16/float16 go to the Triton kernels (fused recurrent for short
sequences, chunked scan otherwise); CPU float32/float64 sequences of up to `CPU_SCAN_MAX_T` steps
that autograd will differentiate to the time-major scan of `cpu.py`; anything else to the PyTorch twin.
"""

from __future__ import annotations

import os

import torch

from .naive import hgrn_gated_naive, hgrn_recurrent_naive, hgrn_scan_naive

__all__ = ["hgrn_scan", "hgrn_gated", "hgrn_scan_naive", "hgrn_gated_naive", "hgrn_recurrent_naive",
           "RECURRENT_MAX_T", "CPU_SCAN_MAX_T"]

RECURRENT_MAX_T = 64
"""Up to this many steps the one-pass recurrent kernel is used; beyond, the chunked scan."""

CPU_SCAN_MAX_T = 1024
"""Up to this many steps CPU training uses the one-kernel-per-step scan; beyond, the parallel twin."""

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

USE_TRITON = True
"""False sends CUDA tensors to the PyTorch twin too (bench/train_step.py compares the two paths)."""
TRITON_ON_CPU = False
"""True sends CPU tensors to the Triton kernels too when TRITON_INTERPRET=1 (bench/saved_tensors.py
counts what the GPU path saves, on a CPU)."""
USE_CPU_TRAINING = True
"""False sends CPU training to the PyTorch twin too (tests compare the two paths)."""


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
    if _cpu_training(i, f, h0):
        from .cpu import hgrn_scan_cpu
        return hgrn_scan_cpu(i, f, h0)
    return hgrn_scan_naive(i, f, h0)


def hgrn_gated(yi: torch.Tensor, yf: torch.Tensor, yg: torch.Tensor, lb: torch.Tensor | None,
               gain: torch.Tensor, eps: float, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gates, scan and output gate of the token mixer (see `naive.hgrn_gated_naive`) → (o, h_T).

    GPU training runs `gated.py`, which saves only yi, yf, yg for backward; everything else
    composes the dispatched scan and norm, as the layer always did."""
    if _triton(yi) and torch.is_grad_enabled() and yi.dim() == 3:
        from .gated import hgrn_gated_fused
        return hgrn_gated_fused(yi, yf, yg, lb, gain, eps, h0)
    from ..bitlinear import rms_norm
    f = torch.sigmoid(yf)
    if lb is not None:
        f = lb + (1 - lb) * f
    i = torch.nn.functional.silu(yi) * (1 - f)
    # the scan runs in float32 (float64 stays float64) even under bf16 autocast
    scan_dtype = torch.float64 if i.dtype == torch.float64 else torch.float32
    h, last = hgrn_scan(i.to(scan_dtype), f.to(scan_dtype), h0)
    return rms_norm(yg, gain, eps) * torch.nn.functional.silu(h).to(yg.dtype), last


def _triton(x: torch.Tensor) -> bool:
    on_device = x.is_cuda or (TRITON_ON_CPU and os.environ.get("TRITON_INTERPRET") == "1")
    return USE_TRITON and on_device and x.dtype in _TRITON_DTYPES


def _cpu_training(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None) -> bool:
    tensors = [t for t in (i, f, h0) if t is not None]
    return (USE_CPU_TRAINING and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
            and i.shape[1] <= CPU_SCAN_MAX_T and all(t.device.type == "cpu" for t in tensors)
            and i.dtype == f.dtype and i.dtype in (torch.float32, torch.float64))
