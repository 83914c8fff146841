"""Per-token work between the ternary products of inference (norms, gates, recurrence step, GLU,
activation quantisation). Each public function runs the Triton kernel for CUDA tensors, else the
PyTorch twin; shapes and formulas are documented in `naive.py`."""

from __future__ import annotations

import torch

from . import naive


def _pick(name: str, x: torch.Tensor):
    if x.is_cuda:
        from . import fused
        return getattr(fused, f"{name}_fused")
    return getattr(naive, f"{name}_naive")


def norm_quant(x, gains, pre_gain=None, pre_eps: float = 1e-6):
    return _pick("norm_quant", x)(x, gains, pre_gain, pre_eps)


def hgrn_gates(y, lb):
    """y = [yi | yf | yg] [M, 3d] → (i, f) float32 [M, d]."""
    if not y.is_cuda:
        d = y.shape[1] // 3
        return naive.hgrn_gates_naive(y[:, :d], y[:, d:2 * d], lb)
    return _pick("hgrn_gates", y)(y, lb)


def hgrn_output(y, h, g_norm, o_norm, eps: float):
    """y = [yi | yf | yg] [M, 3d], h [M, d] → o_proj's (q, s)."""
    if not y.is_cuda:
        return naive.hgrn_output_naive(y[:, 2 * h.shape[1]:], h, g_norm, o_norm, eps)
    return _pick("hgrn_output", y)(y, h, g_norm, o_norm, eps)


def hgrn_step(y, state, lb, g_norm, o_norm, eps: float):
    return _pick("hgrn_step", y)(y, state, lb, g_norm, o_norm, eps)


def glu_quant(y, down_norm):
    return _pick("glu_quant", y)(y, down_norm)


__all__ = ["norm_quant", "hgrn_gates", "hgrn_output", "hgrn_step", "glu_quant"]
