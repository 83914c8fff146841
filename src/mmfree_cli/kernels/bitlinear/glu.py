"""The channel mixer's down projection with its GLU folded in, for training on GPU:
y = BitLinear(silu(gate) ⊙ up), held to `bitlinear_naive(silu(gate)·up, γ, W)`.

    forward   [gate | up] ─GLU+norm+quant kernel─▶ q (int8), s ─int8 GEMM─▶ y
    backward  dy @ codes ─GLU-norm backward kernel (recompute p = silu(gate)·up, its norm and
              x_q)─▶ d[gate | up], dγ;  dyᵀ @ x_q ─▶ dW

Autograd keeps only [gate | up] (gate_proj's output, which the plain form keeps too) — not the
product p, its norm or its quantised codes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fused import _compute_dtype, _interpreting, _weight_scale, int8_ternary_gemm, quantize_row, ternary_codes
from .naive import BITLINEAR_NORM_EPS


@triton.jit
def _glu_norm_bwd_kernel(Y, G, DXN, DY, XQ, DG, MUL, M, K, eps, stride_y, stride_dxn, stride_dy,
                         ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """ROWS rows of y = [gate | up] [M, 2K]: p = silu(gate)·up, x̂₀ = p·rstd, x_q (written to XQ);
    dx̂ = DXN·mul (STE); dp = rstd·(dx̂γ − x̂₀·mean(dx̂γ·x̂₀)); dgate = dp·up·silu'(gate),
    dup = dp·silu(gate) into DY; partial dγ = Σ_rows dx̂·x̂₀ into DG[pid]."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    g = tl.load(G + cols, mask=mask, other=0.0).to(tl.float32)
    mul = tl.load(MUL).to(tl.float32)
    dg = tl.zeros([BLOCK_K], dtype=tl.float32)
    for r in range(ROWS):
        row = (pid * ROWS + r).to(tl.int64)
        if row < M:
            gate = tl.load(Y + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
            up = tl.load(Y + row * stride_y + K + cols, mask=mask, other=0.0).to(tl.float32)
            sig = tl.sigmoid(gate)
            silu = gate * sig
            p = silu * up
            rstd = 1.0 / tl.sqrt(tl.sum(p * p, 0) / K + eps)
            x0 = p * rstd
            q, s = quantize_row(x0 * g, mask)
            tl.store(XQ + row * K + cols, (q / s).to(XQ.dtype.element_ty), mask=mask)
            dxn = tl.load(DXN + row * stride_dxn + cols, mask=mask, other=0.0).to(tl.float32) * mul
            dg += dxn * x0
            gd = dxn * g
            dp = rstd * (gd - x0 * (tl.sum(gd * x0, 0) / K))
            dgate = dp * up * sig * (1.0 + gate * (1.0 - sig))
            tl.store(DY + row * stride_dy + cols, dgate.to(DY.dtype.element_ty), mask=mask)
            tl.store(DY + row * stride_dy + K + cols, (dp * silu).to(DY.dtype.element_ty), mask=mask)
    tl.store(DG + pid * K + cols, dg, mask=mask)


def _glu_quant(y2: torch.Tensor, norm_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from ..rowwise.fused import glu_quant_fused  # the inference kernel computes exactly this
    q, s = glu_quant_fused(y2, norm_weight)
    return q[0], s[0]


class FusedGLUBitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, norm_weight, weight):
        dtype = _compute_dtype(y)
        y2 = y.reshape(-1, y.shape[-1])
        if y2.stride(-1) != 1:
            y2 = y2.contiguous()
        beta = _weight_scale(weight)
        q, s = _glu_quant(y2, norm_weight)
        out = int8_ternary_gemm(q, s, ternary_codes(weight, beta, torch.int8), beta, dtype)
        ctx.save_for_backward(y2, norm_weight, weight, beta)
        ctx.dtype, ctx.y_shape = dtype, y.shape
        return out.reshape(*y.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dout):
        y2, norm_weight, weight, beta = ctx.saved_tensors
        M, K = y2.shape[0], y2.shape[1] // 2
        d2 = dout.reshape(M, -1).to(ctx.dtype)
        dxn = d2 @ ternary_codes(weight, beta, ctx.dtype)  # ·β happens in the kernel
        xq = torch.empty(M, K, dtype=ctx.dtype, device=y2.device)
        dy = torch.empty_like(y2)
        rows = 1 if _interpreting() else 8 if M < 16384 else 32
        programs = triton.cdiv(M, rows)
        dg = torch.empty(programs, K, dtype=torch.float32, device=y2.device)
        block = triton.next_power_of_2(K)
        _glu_norm_bwd_kernel[(programs,)](y2, norm_weight, dxn, dy, xq, dg, beta, M, K, BITLINEAR_NORM_EPS,
                                          y2.stride(0), dxn.stride(0), dy.stride(0), ROWS=rows, BLOCK_K=block,
                                          num_warps=1 if _interpreting() else min(16, max(1, block // 512)))
        dw = (d2.t() @ xq).to(weight.dtype)
        return dy.reshape(ctx.y_shape), dg.sum(0).to(norm_weight.dtype), dw


def glu_bitlinear_fused(y: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Triton form of `bitlinear_naive(silu(gate)·up, γ, W)` with y = [gate | up] [..., 2K], W [N, K]."""
    if y.shape[-1] != 2 * weight.shape[1] or norm_weight.shape != (weight.shape[1],):
        raise ValueError(f"glu_bitlinear: y [..., {y.shape[-1]}], norm_weight {tuple(norm_weight.shape)} and "
                         f"weight {tuple(weight.shape)} do not fit")
    return FusedGLUBitLinear.apply(y, norm_weight, weight)


__all__ = ["glu_bitlinear_fused"]
