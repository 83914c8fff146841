"""Fused BitLinear for training on GPU: RMSNorm + int8 activation quant + ternary matmul, forward and
backward, held to `naive.bitlinear_naive` (same formulas, same rounding rules).

Memory is the point: the forward saves only its input x and one float per row (rstd); the
backward recomputes the normalised and quantised activations from those, and re-derives the
ternary weight codes from the latent weights (cheap: one pass over W). The plain twin under
autograd keeps several float32 copies of every activation instead.

    forward   x ─norm+quant kernel─▶ q (int8), s ─int8 GEMM (epilogue ·β/s)─▶ y
    backward  dy @ codes (bf16 tensor cores) ─norm backward kernel (·β, recompute x_q)─▶ dx, dγ
              dyᵀ @ x_q ─▶ dW            (straight-through: quantisers pass gradients unchanged)

The forward product runs on int8 tensor cores (ternary × int8 is exact in int32) when
`FORWARD_MATMUL == "int8"`, else as a bf16/fp32 product of x_q·β and the codes.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ..interpret import interpreting as _interpreting
from .naive import ACT_SCALE_FLOOR, BITLINEAR_NORM_EPS, WEIGHT_SCALE_FLOOR

# the shared numerics (kernels/numerics.py) as compile-time constants: a @triton.jit function reads
# a global only when it is a tl.constexpr
NORM_EPS = tl.constexpr(BITLINEAR_NORM_EPS)
ACT_FLOOR = tl.constexpr(ACT_SCALE_FLOOR)

FORWARD_MATMUL = os.environ.get("MMFREE_BITLINEAR_MATMUL", "int8")
""""int8": int8 tensor-core GEMM with the ·β/s rescale fused; "float": x_q·β in the activation dtype
times the codes (cuBLAS). bench/train_step.py measures both."""

MODE_INT8, MODE_SCALED, MODE_PLAIN = 0, 1, 2
"""What the norm kernel writes: int8 codes q and scale s; x_q·mul in a float dtype; x̂·mul (no quant)."""


@triton.jit
def quantize_row(xn, mask):
    """Per-row int8 levels of x̂: s = 127/max(|x̂|, floor) (as torch: reciprocal then ·127),
    q = clamp(round_half_away(x̂·s), -128, 127)."""
    amax = tl.max(tl.where(mask, tl.abs(xn), 0.0), 0)
    s = tl.math.div_rn(1.0, tl.maximum(amax, ACT_FLOOR)) * 127.0
    v = xn * s
    q = tl.where(v >= 0, tl.floor(v + 0.5), -tl.floor(-v + 0.5))
    return tl.minimum(tl.maximum(q, -128.0), 127.0), s


@triton.jit
def _norm_quant_fwd_kernel(X, G, OUT, S, RSTD, MUL, stride_x, stride_out, K, eps,
                           MODE: tl.constexpr, BLOCK_K: tl.constexpr):
    """One row: x̂ = x·rstd·γ, then (MODE) int8 q and s / x_q·mul / x̂·mul; rstd saved for backward."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / K + eps)
    xn = x * rstd * g
    tl.store(RSTD + row, rstd)
    if MODE == 2:
        out = xn * tl.load(MUL).to(tl.float32)
    else:
        q, s = quantize_row(xn, mask)
        if MODE == 0:
            out = q
            tl.store(S + row, s)
        else:
            out = q * (tl.load(MUL).to(tl.float32) / s)
    tl.store(OUT + row * stride_out + cols, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _norm_quant_bwd_kernel(X, G, RSTD, DXN, DX, XQ, DG, MUL, M, K, stride_x, stride_dxn, stride_dx,
                           stride_xq, QUANT: tl.constexpr, STORE_XQ: tl.constexpr, ROWS: tl.constexpr,
                           BLOCK_K: tl.constexpr):
    """ROWS rows: recompute x̂ and x_q (written to XQ for dW), dx̂ = DXN·mul (STE), RMSNorm backward
    dx = rstd·(dx̂γ − x̂₀·mean(dx̂γ·x̂₀)) with x̂₀ = x·rstd; partial dγ = Σ_rows dx̂·x̂₀ into DG[pid]."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_K)
    mask = cols < K
    g = tl.load(G + cols, mask=mask, other=0.0).to(tl.float32)
    mul = tl.load(MUL).to(tl.float32)
    dg = tl.zeros([BLOCK_K], dtype=tl.float32)
    for r in range(ROWS):
        row = (pid * ROWS + r).to(tl.int64)
        if row < M:
            x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + row)
            x0 = x * rstd
            xn = x0 * g
            if QUANT:
                q, s = quantize_row(xn, mask)
                xq = q / s
            else:
                xq = xn
            if STORE_XQ:
                tl.store(XQ + row * stride_xq + cols, xq.to(XQ.dtype.element_ty), mask=mask)
            dxn = tl.load(DXN + row * stride_dxn + cols, mask=mask, other=0.0).to(tl.float32) * mul
            dg += dxn * x0
            gd = dxn * g
            dx = rstd * (gd - x0 * (tl.sum(gd * x0, 0) / K))
            tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DG + pid * K + cols, dg, mask=mask)


@triton.jit
def _ternary_codes_kernel(W, BETA, OUT, n, BLOCK: tl.constexpr):
    """codes = clamp(round_half_even(W/β), -1, 1): +1 above β/2, −1 below −β/2, else 0 (a tie
    at exactly ±β/2 rounds to even, i.e. 0). Compared without dividing, so no rounding enters."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    w = tl.load(W + offs, mask=mask, other=0.0).to(tl.float32)
    half = tl.load(BETA) * 0.5
    code = tl.where(w > half, 1.0, tl.where(w < -half, -1.0, 0.0))
    tl.store(OUT + offs, code.to(OUT.dtype.element_ty), mask=mask)


def _gemm_configs():
    if _interpreting():
        return [triton.Config({"BM": 16, "BN": 32, "BK": 32, "GROUP_M": 4}, num_warps=4)]
    return [triton.Config({"BM": bm, "BN": bn, "BK": bk, "GROUP_M": 8}, num_warps=w, num_stages=st)
            for bm, bn, bk, w, st in [(128, 128, 128, 8, 4), (128, 256, 128, 8, 3), (64, 128, 128, 4, 4),
                                      (128, 128, 64, 4, 4), (64, 64, 128, 4, 4), (256, 128, 128, 8, 3),
                                      (128, 256, 64, 8, 4), (256, 128, 64, 8, 4), (128, 128, 128, 4, 3),
                                      (256, 256, 64, 8, 3)]]


@triton.autotune(configs=_gemm_configs(), key=["N", "K"])
@triton.jit
def _int8_ternary_gemm_kernel(A, B, C, SA, BETA, M, N, K, stride_am, stride_bn, stride_cm,
                              BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr):
    """C[m, n] = (Σ_k A[m, k]·B[n, k]) · β / SA[m]: int8 × int8 → int32 on tensor cores, exact."""
    pid = tl.program_id(0)
    grid_m, grid_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = pid // (GROUP_M * grid_n)  # grouped ordering: neighbouring programs share B tiles in L2
    first_m = group * GROUP_M
    size_m = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * grid_n)) % size_m
    pid_n = (pid % (GROUP_M * grid_n)) // size_m
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a_ptr = A + rm[:, None].to(tl.int64) * stride_am + rk[None, :]
    b_ptr = B + rn[None, :].to(tl.int64) * stride_bn + rk[:, None]
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    for k0 in range(0, K, BK):
        kmask = rk + k0 < K
        a = tl.load(a_ptr, mask=(rm[:, None] < M) & kmask[None, :], other=0)
        b = tl.load(b_ptr, mask=(rn[None, :] < N) & kmask[:, None], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptr += BK
        b_ptr += BK
    sa = tl.load(SA + rm, mask=rm < M, other=1.0)
    y = acc.to(tl.float32) * (tl.load(BETA) / sa[:, None])
    c_ptr = C + rm[:, None].to(tl.int64) * stride_cm + rn[None, :]
    tl.store(c_ptr, y.to(C.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


def _block(k: int) -> int:
    return triton.next_power_of_2(k)


def norm_quant(x2: torch.Tensor, norm_weight: torch.Tensor, mode: int, out_dtype: torch.dtype,
               mul: torch.Tensor | None = None, eps: float = BITLINEAR_NORM_EPS):
    """Launch the forward norm kernel on rows x2 [M, K] → (out [M, K], s [M] or None, rstd [M])."""
    M, K = x2.shape
    out = torch.empty(M, K, dtype=out_dtype, device=x2.device)
    rstd = torch.empty(M, dtype=torch.float32, device=x2.device)
    s = torch.empty(M if mode == MODE_INT8 else 1, dtype=torch.float32, device=x2.device)
    mul = s if mul is None else mul
    _norm_quant_fwd_kernel[(M,)](x2, norm_weight, out, s, rstd, mul, x2.stride(0), out.stride(0), K, eps,
                                 MODE=mode, BLOCK_K=_block(K), num_warps=_warps(K))
    return out, (s if mode == MODE_INT8 else None), rstd


def _warps(k: int) -> int:
    return 1 if _interpreting() else min(16, max(1, _block(k) // 512))


def ternary_codes(weight: torch.Tensor, beta: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Codes −1/0/+1 of W with scale β, in `dtype` (int8 for the int8 GEMM, bf16/fp32 for cuBLAS)."""
    out = torch.empty(weight.shape, dtype=dtype, device=weight.device)
    n = weight.numel()
    block = 1024
    _ternary_codes_kernel[(triton.cdiv(n, block),)](weight.contiguous(), beta, out, n, BLOCK=block)
    return out


def int8_ternary_gemm(q: torch.Tensor, s: torch.Tensor, codes: torch.Tensor, beta: torch.Tensor,
                      out_dtype: torch.dtype) -> torch.Tensor:
    """q int8 [M, K], s [M], codes int8 [N, K], β (0-dim) → q·codesᵀ·β/s [M, N] in out_dtype."""
    M, K = q.shape
    N = codes.shape[0]
    c = torch.empty(M, N, dtype=out_dtype, device=q.device)
    grid = lambda meta: (triton.cdiv(M, meta["BM"]) * triton.cdiv(N, meta["BN"]),)  # noqa: E731
    _int8_ternary_gemm_kernel[grid](q, codes, c, s, beta, M, N, K, q.stride(0), codes.stride(0), c.stride(0))
    return c


def norm_backward(x2: torch.Tensor, norm_weight: torch.Tensor, rstd: torch.Tensor, dxn: torch.Tensor,
                  mul: torch.Tensor, quantize: bool, xq: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm backward over rows (dx̂ = dxn·mul) → (dx [M, K] in x's dtype, dγ [K] float32); when
    `xq` is given, also writes the recomputed (quantised, if `quantize`) activations into it."""
    M, K = x2.shape
    dx = torch.empty(M, K, dtype=x2.dtype, device=x2.device)
    rows = 1 if _interpreting() else 8 if M < 16384 else 32
    programs = triton.cdiv(M, rows)
    dg = torch.empty(programs, K, dtype=torch.float32, device=x2.device)
    out = xq if xq is not None else dx
    _norm_quant_bwd_kernel[(programs,)](x2, norm_weight, rstd, dxn, dx, out, dg, mul, M, K, x2.stride(0),
                                        dxn.stride(0), dx.stride(0), out.stride(0), QUANT=quantize,
                                        STORE_XQ=xq is not None, ROWS=rows, BLOCK_K=_block(K), num_warps=_warps(K))
    return dx, dg.sum(0)


class FusedRMSNorm(torch.autograd.Function):
    """y = x·rsqrt(mean(x²) + eps)·γ in x's dtype; saves x and rstd only."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        x2 = x.reshape(-1, x.shape[-1])
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        one = torch.ones(1, device=x.device)
        y, _, rstd = norm_quant(x2, weight, MODE_PLAIN, x.dtype, mul=one, eps=eps)
        ctx.save_for_backward(x2, weight, rstd, one)
        ctx.x_shape = x.shape
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd, one = ctx.saved_tensors
        dy2 = dy.reshape(x2.shape)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx, dg = norm_backward(x2, weight, rstd, dy2, one, False, None)
        return dx.reshape(ctx.x_shape), dg.to(weight.dtype), None


def rms_norm_fused(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Triton twin of `naive.rms_norm` (with a gain): x [..., K], weight [K]."""
    return FusedRMSNorm.apply(x, weight, eps)


def _weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """β = max(mean|W|, floor) in float32, as a 1-element device tensor (no host sync)."""
    return weight.float().abs().mean().clamp(min=WEIGHT_SCALE_FLOOR).reshape(1)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The activation dtype of the products: the autocast dtype when autocast is on, else x's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class FusedBitLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, weight, quantize: bool):
        dtype = _compute_dtype(x)
        x2 = x.reshape(-1, x.shape[-1])
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        beta = _weight_scale(weight) if quantize else torch.ones(1, device=x.device)
        if quantize and FORWARD_MATMUL == "int8":
            q, s, rstd = norm_quant(x2, norm_weight, MODE_INT8, torch.int8)
            y = int8_ternary_gemm(q, s, ternary_codes(weight, beta, torch.int8), beta, dtype)
        elif quantize:
            xq, _, rstd = norm_quant(x2, norm_weight, MODE_SCALED, dtype, mul=beta)
            y = xq @ ternary_codes(weight, beta, dtype).t()
        else:
            xn, _, rstd = norm_quant(x2, norm_weight, MODE_PLAIN, dtype, mul=beta)
            y = xn @ weight.to(dtype).t()
        ctx.save_for_backward(x2, norm_weight, weight, rstd, beta)
        ctx.quantize, ctx.dtype, ctx.x_shape = quantize, dtype, x.shape
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, norm_weight, weight, rstd, beta = ctx.saved_tensors
        M, K = x2.shape
        dy2 = dy.reshape(M, -1).to(ctx.dtype)
        w_eff = ternary_codes(weight, beta, ctx.dtype) if ctx.quantize else weight.to(ctx.dtype)
        dxn = dy2 @ w_eff  # ·β happens in the kernel
        xq = torch.empty(M, K, dtype=ctx.dtype, device=x2.device)
        dx, dg = norm_backward(x2, norm_weight, rstd, dxn, beta, ctx.quantize, xq)
        dw = (dy2.t() @ xq).to(weight.dtype)
        return dx.reshape(ctx.x_shape), dg.to(norm_weight.dtype), dw, None


def bitlinear_fused(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                    quantize: bool = True) -> torch.Tensor:
    """Triton BitLinear, same contract as `bitlinear_naive`. x: [..., K], weight: [N, K] → [..., N]."""
    if x.shape[-1] != weight.shape[1] or norm_weight.shape != (weight.shape[1],):
        raise ValueError(f"bitlinear: x [..., {x.shape[-1]}], norm_weight {tuple(norm_weight.shape)} and "
                         f"weight {tuple(weight.shape)} do not fit")
    return FusedBitLinear.apply(x, norm_weight, weight, quantize)


__all__ = ["bitlinear_fused", "rms_norm_fused", "norm_quant", "ternary_codes", "int8_ternary_gemm", "FORWARD_MATMUL",
           "ACT_SCALE_FLOOR"]
