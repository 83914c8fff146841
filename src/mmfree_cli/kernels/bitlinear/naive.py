"""BitLinear in plain PyTorch: the spec every fast BitLinear kernel is held to.

Follows the reference HGRN-Bit code (ridger/MMfreeLM), not the paper where they differ:

    x̂   = rms_norm(x) · γ                          eps = BITLINEAR_NORM_EPS (1e-6)
    s   = 127 / max(|x̂|_∞ per token, ACT_SCALE_FLOOR)
    x_q = clamp(round_half_away(x̂ · s), -128, 127) / s
    β   = max(mean |W|, WEIGHT_SCALE_FLOOR)        one scale per tensor
    W_q = clamp(round_half_even(W / β), -1, 1) · β
    y   = x_q W_qᵀ

Backward is the straight-through estimator: both quantizers pass gradients through unchanged.
Norms and quantizers compute in float32 (float64 stays float64), as the reference's fused kernel did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..numerics import ACT_SCALE_FLOOR, BITLINEAR_NORM_EPS, WEIGHT_SCALE_FLOOR


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """y = x · rsqrt(mean(x²) + eps) · weight over the last dim, computed in float32 or float64."""
    xf = x.to(_compute_dtype(x))
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero (2.5 → 3, -2.5 → -3), as the reference's int8 cast."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-token int8 scale s = 127 / max(|x|, ACT_SCALE_FLOOR), shape [..., 1]."""
    return 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_SCALE_FLOOR)


def quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """Fake-quantize activations to int8 levels per token (no STE: see `bitlinear_naive`)."""
    xf = x.to(_compute_dtype(x))
    s = activation_scale(xf)
    return (round_half_away(xf * s).clamp(-128, 127) / s).to(x.dtype)


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """Per-tensor ternary scale β = max(mean |W|, WEIGHT_SCALE_FLOOR), a 0-dim tensor."""
    return w.to(_compute_dtype(w)).abs().mean().clamp(min=WEIGHT_SCALE_FLOOR)


def ternarize(w: torch.Tensor, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Ternary codes clamp(round_half_even(W/β), -1, 1) as a tensor of -1/0/+1 in W's float dtype.

    Pass `beta` to keep a stored scale: never re-derive β from already-ternary weights.
    """
    beta = weight_scale(w) if beta is None else beta
    return torch.round(w.to(beta.dtype) / beta).clamp(-1, 1).to(w.dtype)


def quantize_weights(w: torch.Tensor) -> torch.Tensor:
    """Fake-quantize a weight tensor to β·{-1, 0, +1} (no STE)."""
    beta = weight_scale(w)
    return (ternarize(w, beta).to(beta.dtype) * beta).to(w.dtype)


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward q, backward identity into x (straight-through estimator)."""
    return x + (q - x).detach()


def bitlinear_naive(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                    quantize: bool = True, eps: float = BITLINEAR_NORM_EPS) -> torch.Tensor:
    """RMSNorm + (optionally) W1.58A8 fake-quant + linear. x: [..., K], weight: [N, K] → [..., N]."""
    xn = rms_norm(x, norm_weight, eps)
    if quantize:
        xn = ste(xn, quantize_activations(xn))
        weight = ste(weight, quantize_weights(weight))
    return F.linear(xn, weight)
