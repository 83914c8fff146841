"""BitLinear and RMSNorm for CPU training: autograd Functions with the backward written out.

Autograd through the PyTorch twin (`naive.py`, the spec) records about fifteen small ops per
projection and keeps every temporary alive for the backward; on a CPU training a small model those
ops, not the matmuls, are most of the time. Here the forward does the twin's arithmetic in the same
order (bit-exact in float32: the straight-through `x + (q - x)` of the activations is exactly `q`,
since q and x are within a factor of two or q is 0, so only the weights repeat that sum), saves only
x, the per-row rsqrt r, the quantized activations and weights, and the backward computes the STE
gradient directly:

    x̂ = x·r·γ,  r = rsqrt(mean(x²) + eps)        y = x_q W_qᵀ
    dx_q = dy W_q   (STE: dx̂ = dx_q)              dW = dyᵀ x_q   (STE: dW = dW_q)
    dγ = Σ_rows dx̂ ⊙ x·r                          dx = r·(dx̂ ⊙ γ) − x·r³·mean(dx̂ ⊙ γ ⊙ x)

Inputs are float32 or float64 (computed in their own dtype); `kernels.bitlinear` sends CPU float32
training here and everything else to the twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .naive import ACT_SCALE_FLOOR, BITLINEAR_NORM_EPS, WEIGHT_SCALE_FLOOR


def _rms_forward(x2: torch.Tensor, gamma: torch.Tensor | None, eps: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """x2: [M, K] → (x·r·γ [M, K], r [M, 1]), in the twin's op order."""
    r = torch.rsqrt(x2.pow(2).mean(-1, keepdim=True) + eps)
    y = x2 * r
    if gamma is not None:
        y.mul_(gamma)
    return y, r


def _rms_backward(g: torch.Tensor, x2: torch.Tensor, r: torch.Tensor, gamma: torch.Tensor | None,
                  need_gamma: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient of y = x·r·γ given dy = g (overwritten): (dx [M, K], dγ [K] or None)."""
    gx = g * x2
    # both reductions of g·x are matrix-vector products: one BLAS pass each, no temporaries
    d_gamma = gx.t().mv(r.view(-1)) if need_gamma and gamma is not None else None  # Σ_rows g·x·r
    dot = (gx.mv(gamma) if gamma is not None else gx.sum(-1)).div_(x2.shape[-1]).unsqueeze(-1)  # mean(g·γ·x)
    if gamma is not None:
        g.mul_(gamma)
    # dx = r·g·γ − x·r³·mean(g·γ·x)
    return torch.addcmul(g.mul_(r), x2, dot.mul_(r.pow(3)), value=-1.0), d_gamma


def _quantize_activations_(xn: torch.Tensor) -> torch.Tensor:
    """Per-token int8 fake-quant of xn [M, K] (consumed): clamp(round_half_away(xn·s), -128, 127) / s.

    The clamp is left out: |xn·s| ≤ 127·(1 + 2⁻²³)² < 127.5 since s = 127 / max|xn|, so it never binds.
    """
    lo, hi = torch.aminmax(xn, dim=-1, keepdim=True)  # max|xn| = max(hi, -lo), without an |xn| temporary
    s = 127.0 / torch.maximum(hi, lo.neg_()).clamp_(min=ACT_SCALE_FLOOR)
    xs = xn.mul_(s)
    # round half away from zero: sign · floor(|v| + 0.5), as naive.round_half_away
    return xs.abs().add_(0.5).floor_().copysign_(xs).div_(s)


def _quantize_weights(w: torch.Tensor) -> torch.Tensor:
    """β·clamp(round_half_even(W/β), -1, 1) seen through the twin's STE sum W + (W_q − W)."""
    beta = w.abs().mean().clamp(min=WEIGHT_SCALE_FLOOR)
    wq = torch.round(w / beta).clamp_(-1, 1).mul_(beta)
    return w + (wq - w)


class BitLinearCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, weight, quantize, eps):
        x2 = x.reshape(-1, x.shape[-1])
        xn, r = _rms_forward(x2, norm_weight, eps)
        xq = _quantize_activations_(xn) if quantize else xn
        wq = _quantize_weights(weight) if quantize else weight
        ctx.save_for_backward(x2, r, norm_weight, xq, wq)
        return F.linear(xq, wq).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, r, gamma, xq, wq = ctx.saved_tensors
        need_x, need_gamma, need_w = ctx.needs_input_grad[:3]
        dy2 = dy.reshape(-1, dy.shape[-1])
        dw = dy2.t().mm(xq) if need_w else None
        dx = d_gamma = None
        if need_x or need_gamma:
            dx, d_gamma = _rms_backward(dy2.mm(wq), x2, r, gamma, need_gamma)
            dx = dx.view(*dy.shape[:-1], x2.shape[-1])
        return dx, d_gamma, dw, None, None


class RMSNormCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x2 = x.reshape(-1, x.shape[-1])
        y, r = _rms_forward(x2, weight, eps)
        ctx.save_for_backward(x2, r, weight)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, r, weight = ctx.saved_tensors
        dx, d_weight = _rms_backward(dy.reshape(x2.shape).clone(), x2, r, weight, ctx.needs_input_grad[1])
        return dx.view(dy.shape), d_weight, None


def bitlinear_cpu(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                  quantize: bool = True, eps: float = BITLINEAR_NORM_EPS) -> torch.Tensor:
    """Same contract as `bitlinear_naive`. x: [..., K], norm_weight: [K], weight: [N, K] → [..., N]."""
    return BitLinearCPU.apply(x, norm_weight, weight, quantize, eps)


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Same contract as `naive.rms_norm` with a gain: x · rsqrt(mean(x²) + eps) · weight."""
    return RMSNormCPU.apply(x, weight, eps)
