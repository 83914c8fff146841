"""BitLinear: RMSNorm + int8 activations × ternary weights. `bitlinear` picks the kernel by device.

CUDA tensors in float32/bfloat16/float16 go to the fused Triton kernels (`fused.py`); CPU float32
training (grad enabled, something requiring grad, no autocast) to the autograd Functions of
`cpu.py`; anything else (inference, float64) to the PyTorch twin (`naive.py`), which is the spec
all are tested against. The model's plain RMSNorms use `rms_norm` from here, so they take the same
route.
"""

from __future__ import annotations

import torch

from .naive import (
    ACT_SCALE_FLOOR,
    BITLINEAR_NORM_EPS,
    WEIGHT_SCALE_FLOOR,
    activation_scale,
    bitlinear_naive,
    quantize_activations,
    quantize_weights,
    round_half_away,
    ternarize,
    weight_scale,
)
from .naive import rms_norm as rms_norm_naive

__all__ = ["bitlinear", "bitlinear_naive", "rms_norm", "rms_norm_naive", "round_half_away", "activation_scale",
           "quantize_activations", "quantize_weights", "weight_scale", "ternarize",
           "BITLINEAR_NORM_EPS", "ACT_SCALE_FLOOR", "WEIGHT_SCALE_FLOOR"]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

USE_TRITON = True
"""False sends CUDA tensors to the PyTorch twin too (bench/train_step.py compares the two paths)."""
USE_CPU_TRAINING = True
"""False sends CPU training to the PyTorch twin too (tests compare the two paths)."""


def _cpu_training(*tensors: torch.Tensor) -> bool:
    """CPU float32 tensors that autograd will differentiate, outside autocast (which the twin obeys)."""
    return (USE_CPU_TRAINING and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not torch.is_autocast_enabled("cpu"))


def bitlinear(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
              quantize: bool = True) -> torch.Tensor:
    """y = quant(rms_norm(x)·γ) @ quant(W)ᵀ. x: [..., K], norm_weight: [K], weight: [N, K]."""
    if USE_TRITON and x.is_cuda and x.dtype in _TRITON_DTYPES:
        from .fused import bitlinear_fused
        return bitlinear_fused(x, norm_weight, weight, quantize)
    if _cpu_training(x, norm_weight, weight):
        from .cpu import bitlinear_cpu
        return bitlinear_cpu(x, norm_weight, weight, quantize)
    return bitlinear_naive(x, norm_weight, weight, quantize)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """y = x · rsqrt(mean(x²) + eps) · weight over the last dim, in x's dtype (see naive.rms_norm)."""
    if USE_TRITON and weight is not None and x.is_cuda and x.dtype in _TRITON_DTYPES:
        from .fused import rms_norm_fused
        return rms_norm_fused(x, weight, eps)
    if weight is not None and _cpu_training(x, weight):
        from .cpu import rms_norm_cpu
        return rms_norm_cpu(x, weight, eps)
    return rms_norm_naive(x, weight, eps)
