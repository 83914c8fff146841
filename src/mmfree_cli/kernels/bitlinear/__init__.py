"""BitLinear: RMSNorm + int8 activations × ternary weights. `bitlinear` picks the kernel by device.

CUDA tensors in float32/bfloat16/float16 go to the fused Triton kernels (`fused.py`); CPU float32
training (grad enabled, something requiring grad, no autocast) to the autograd Functions of
`cpu.py`; anything else (inference, float64) to the PyTorch twin (`naive.py`), which is the spec
all are tested against. The model's plain RMSNorms use `rms_norm` from here, so they take the same
route.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

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

__all__ = ["bitlinear", "glu_bitlinear", "head_cross_entropy", "bitlinear_naive", "rms_norm", "rms_norm_naive", "round_half_away", "activation_scale",
           "quantize_activations", "quantize_weights", "weight_scale", "ternarize",
           "BITLINEAR_NORM_EPS", "ACT_SCALE_FLOOR", "WEIGHT_SCALE_FLOOR"]

_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

USE_TRITON = True
"""False sends CUDA tensors to the PyTorch twin too (bench/train_step.py compares the two paths)."""
TRITON_ON_CPU = False
"""True sends CPU tensors to the Triton kernels too when TRITON_INTERPRET=1 (bench/saved_tensors.py
counts what the GPU path saves, on a CPU)."""
USE_CPU_TRAINING = True
"""False sends CPU training to the PyTorch twin too (tests compare the two paths)."""


def _cpu_training(*tensors: torch.Tensor) -> bool:
    """CPU float32 tensors that autograd will differentiate, outside autocast (which the twin obeys)."""
    return (USE_CPU_TRAINING and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
            and not torch.is_autocast_enabled("cpu"))


def _triton(x: torch.Tensor) -> bool:
    on_device = x.is_cuda or (TRITON_ON_CPU and os.environ.get("TRITON_INTERPRET") == "1")
    return USE_TRITON and on_device and x.dtype in _TRITON_DTYPES


def _fused_training(x: torch.Tensor, quantize: bool) -> bool:
    """GPU training of a ternary layer with the int8 forward: the fused GLU and head kernels apply."""
    from . import fused
    return _triton(x) and quantize and fused.FORWARD_MATMUL == "int8" and torch.is_grad_enabled()


def glu_bitlinear(y: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor, quantize: bool = True
                  ) -> torch.Tensor:
    """bitlinear(silu(gate) ⊙ up) with y = [gate | up]: one kernel pair on GPU training (glu.py) that
    saves only y; elsewhere the plain composition."""
    if _fused_training(y, quantize):
        from .glu import glu_bitlinear_fused
        return glu_bitlinear_fused(y, norm_weight, weight)
    gate, up = y.chunk(2, dim=-1)
    return bitlinear(F.silu(gate) * up, norm_weight, weight, quantize)


def head_cross_entropy(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       quantize: bool = True, ignore_index: int = -100) -> torch.Tensor | None:
    """Summed cross-entropy of the BitLinear head's logits against targets, chunked so the logits never
    exist whole (head_ce.py); None where that path does not apply (the caller computes logits)."""
    from . import fused
    if not (_triton(x) and quantize and fused.FORWARD_MATMUL == "int8"):
        return None
    from .head_ce import head_ce_fused
    return head_ce_fused(x, norm_weight, weight, targets, ignore_index)


def bitlinear(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
              quantize: bool = True) -> torch.Tensor:
    """y = quant(rms_norm(x)·γ) @ quant(W)ᵀ. x: [..., K], norm_weight: [K], weight: [N, K]."""
    if _triton(x):
        from .fused import bitlinear_fused
        return bitlinear_fused(x, norm_weight, weight, quantize)
    if _cpu_training(x, norm_weight, weight):
        from .cpu import bitlinear_cpu
        return bitlinear_cpu(x, norm_weight, weight, quantize)
    return bitlinear_naive(x, norm_weight, weight, quantize)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """y = x · rsqrt(mean(x²) + eps) · weight over the last dim, in x's dtype (see naive.rms_norm)."""
    if weight is not None and _triton(x):
        from .fused import rms_norm_fused
        return rms_norm_fused(x, weight, eps)
    if weight is not None and _cpu_training(x, weight):
        from .cpu import rms_norm_cpu
        return rms_norm_cpu(x, weight, eps)
    return rms_norm_naive(x, weight, eps)
