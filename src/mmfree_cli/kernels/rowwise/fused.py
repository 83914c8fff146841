"""Triton kernels for the per-token work between ternary products at inference; twins in `naive.py`.

One program per token (row); a row of d or I values fits in one block. Each kernel ends where
the next product begins: it writes int8 codes and the per-token scale, so the activation
quantisation is fused into whatever precedes the product. `hgrn_step` is the fused recurrence +
gate step of a decode: gates, state update in place, output gate, norms and quantisation, one launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..bitlinear.fused import NORM_EPS, quantize_row
from ..bitlinear.naive import BITLINEAR_NORM_EPS
from ..interpret import interpreting as _interpreting


@triton.jit
def _rms(x, K, eps):
    return 1.0 / tl.sqrt(tl.sum(x * x, 0) / K + eps)


@triton.jit
def _silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _quant_to(xn, cols, mask, Q, S, row, stride_qm, K, P: tl.constexpr, GS, stride_qp, stride_sp):
    """For each of P gains: q_p, s_p of rms_norm(xn)·γ_p (BitLinear eps) → Q[p, row], S[p, row]."""
    rstd = _rms(xn, K, NORM_EPS)
    for p in tl.static_range(P):
        g = tl.load(GS + p * K + cols, mask=mask, other=0.0).to(tl.float32)
        q, s = quantize_row(xn * rstd * g, mask)
        tl.store(Q + p * stride_qp + row * stride_qm + cols, q.to(tl.int8), mask=mask)
        tl.store(S + p * stride_sp + row, s)


@triton.jit
def _norm_quant_kernel(X, PRE, GS, Q, S, K, pre_eps, stride_x, stride_qp, stride_qm, stride_sp,
                       P: tl.constexpr, HAS_PRE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < K
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_PRE:
        x = x * _rms(x, K, pre_eps) * tl.load(PRE + cols, mask=mask, other=0.0).to(tl.float32)
    _quant_to(x, cols, mask, Q, S, row, stride_qm, K, P, GS, stride_qp, stride_sp)


@triton.jit
def _gates(Y, LB, row, cols, mask, stride_y, D, HAS_LB: tl.constexpr):
    yi = tl.load(Y + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
    f = tl.sigmoid(tl.load(Y + row * stride_y + D + cols, mask=mask, other=0.0).to(tl.float32))
    if HAS_LB:
        lb = tl.load(LB + cols, mask=mask, other=0.0).to(tl.float32)
        f = lb + (1 - lb) * f
    return _silu(yi) * (1 - f), f


@triton.jit
def _gates_kernel(Y, LB, I, F, D, stride_y, HAS_LB: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    i, f = _gates(Y, LB, row, cols, mask, stride_y, D, HAS_LB)
    tl.store(I + row * D + cols, i, mask=mask)
    tl.store(F + row * D + cols, f, mask=mask)


@triton.jit
def _output(YG, h, GN, ON, Q, S, row, cols, mask, stride_y, stride_qm, D, eps):
    yg = tl.load(YG + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
    o = yg * _rms(yg, D, eps) * tl.load(GN + cols, mask=mask, other=0.0).to(tl.float32) * _silu(h)
    _quant_to(o, cols, mask, Q, S, row, stride_qm, D, 1, ON, 0, 0)


@triton.jit
def _output_kernel(YG, H, GN, ON, Q, S, D, eps, stride_y, stride_qm, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    h = tl.load(H + row * D + cols, mask=mask, other=0.0)
    _output(YG, h, GN, ON, Q, S, row, cols, mask, stride_y, stride_qm, D, eps)


@triton.jit
def _step_kernel(Y, LB, STATE, GN, ON, Q, S, D, eps, stride_y, stride_qm, HAS_LB: tl.constexpr,
                 BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    i, f = _gates(Y, LB, row, cols, mask, stride_y, D, HAS_LB)
    h = f * tl.load(STATE + row * D + cols, mask=mask, other=0.0) + i
    tl.store(STATE + row * D + cols, h, mask=mask)
    _output(Y + 2 * D, h, GN, ON, Q, S, row, cols, mask, stride_y, stride_qm, D, eps)


@triton.jit
def _glu_kernel(Y, DN, Q, S, I, stride_y, stride_qm, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < I
    gate = tl.load(Y + row * stride_y + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(Y + row * stride_y + I + cols, mask=mask, other=0.0).to(tl.float32)
    _quant_to(_silu(gate) * up, cols, mask, Q, S, row, stride_qm, I, 1, DN, 0, 0)


def _launch(k: int) -> dict:
    block = triton.next_power_of_2(k)
    return {"BLOCK": block, "num_warps": 1 if _interpreting() else min(16, max(4, block // 256))}


def _codes(p: int, m: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty(p, m, k, dtype=torch.int8, device=device),
            torch.empty(p, m, dtype=torch.float32, device=device))


def norm_quant_fused(x: torch.Tensor, gains: torch.Tensor, pre_gain: torch.Tensor | None = None,
                     pre_eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    M, K = x.shape
    q, s = _codes(gains.shape[0], M, K, x.device)
    lp = _launch(K)
    _norm_quant_kernel[(M,)](x, pre_gain if pre_gain is not None else gains, gains, q, s, K, pre_eps, x.stride(0),
                             q.stride(0), q.stride(1), s.stride(0), P=gains.shape[0], HAS_PRE=pre_gain is not None,
                             BLOCK=lp["BLOCK"], num_warps=lp["num_warps"])
    return q, s


def hgrn_gates_fused(y: torch.Tensor, lb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """y = [yi | yf | …] [M, ≥2d] (d = lb's or y's third) → (i, f) float32 [M, d]."""
    M, D = y.shape[0], y.shape[1] // 3
    i = torch.empty(M, D, dtype=torch.float32, device=y.device)
    f = torch.empty_like(i)
    _gates_kernel[(M,)](y, lb if lb is not None else y, i, f, D, y.stride(0), HAS_LB=lb is not None, **_launch(D))
    return i, f


def hgrn_output_fused(y: torch.Tensor, h: torch.Tensor, g_norm: torch.Tensor, o_norm: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y = [yi | yf | yg] [M, 3d]; h [M, d] float32 → o_proj's (q [1, M, d], s [1, M])."""
    M, D = h.shape
    q, s = _codes(1, M, D, y.device)
    _output_kernel[(M,)](y[:, 2 * D:], h, g_norm, o_norm, q, s, D, eps, y.stride(0), q.stride(1), **_launch(D))
    return q, s


def hgrn_step_fused(y: torch.Tensor, state: torch.Tensor, lb: torch.Tensor | None, g_norm: torch.Tensor,
                    o_norm: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    M, D = state.shape
    q, s = _codes(1, M, D, y.device)
    _step_kernel[(M,)](y, lb if lb is not None else state, state, g_norm, o_norm, q, s, D, eps, y.stride(0),
                       q.stride(1), HAS_LB=lb is not None, **_launch(D))
    return q, s


def glu_quant_fused(y: torch.Tensor, down_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    M, I = y.shape[0], y.shape[1] // 2
    q, s = _codes(1, M, I, y.device)
    _glu_kernel[(M,)](y, down_norm, q, s, I, y.stride(0), q.stride(1), **_launch(I))
    return q, s


__all__ = ["norm_quant_fused", "hgrn_gates_fused", "hgrn_output_fused", "hgrn_step_fused", "glu_quant_fused",
           "BITLINEAR_NORM_EPS"]
