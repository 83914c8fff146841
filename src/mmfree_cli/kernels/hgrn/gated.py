"""The HGRN token mixer's element-wise work and scan, for training on GPU, saving only its inputs.

Twin: `naive.hgrn_gated_naive` (same formulas):

    σ = sigmoid(yf);  f = lb + (1 − lb)·σ  (σ without lb);  i = silu(yi)·(1 − f)
    h_t = f_t ⊙ h_{t−1} + i_t                                  (from h0, or 0)
    o = rms_norm(yg)·γ ⊙ silu(h)                               (in yg's dtype)

    forward   gates kernel → i, f ─chunked scan─▶ h ─output kernel─▶ o      (i, f, h: float32, freed)
    backward  gates, scan again (recompute) ─output backward─▶ dh_out, dyg, dγ
              ─reverse scan─▶ dh, df ─gates backward─▶ dyi, dyf, dlb

Memory is the point: autograd keeps yi, yf, yg (the three projections' outputs, bf16 under
autocast) and nothing per token in float32; the plain composition keeps f, h, the SiLUs and the
products, several in float32. The recompute costs one more pass of the cheap element-wise kernels
and one more forward scan in backward.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .chunk import CHUNK, chunk_scan, scan_backward


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _dsilu(x):
    s = tl.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@triton.jit
def _tile(M, D, BM: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BD + tl.arange(0, BD)
    mask = (rows[:, None] < M) & (cols[None, :] < D)
    offs = rows[:, None].to(tl.int64) * D + cols[None, :]
    return cols, mask, offs


@triton.jit
def _gate_values(YI, YF, LB, offs, cols, mask, D, HAS_LB: tl.constexpr):
    """σ(yf), f, silu(yi), yi and lb (0 without) of a [BM, BD] tile, float32."""
    yi = tl.load(YI + offs, mask=mask, other=0.0).to(tl.float32)
    sg = tl.sigmoid(tl.load(YF + offs, mask=mask, other=0.0).to(tl.float32))
    if HAS_LB:
        lb = tl.load(LB + cols, mask=cols < D, other=0.0).to(tl.float32)[None, :]
    else:
        lb = tl.zeros_like(sg)
    return sg, lb + (1.0 - lb) * sg, yi * tl.sigmoid(yi), yi, lb


@triton.jit
def _gates_fwd_kernel(YI, YF, LB, I, F, M, D, HAS_LB: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    cols, mask, offs = _tile(M, D, BM, BD)
    _, f, s, _, _ = _gate_values(YI, YF, LB, offs, cols, mask, D, HAS_LB)
    tl.store(I + offs, s * (1.0 - f), mask=mask)
    tl.store(F + offs, f, mask=mask)


@triton.jit
def _gates_bwd_kernel(YI, YF, LB, DH, DF, DYI, DYF, DLB, M, D, HAS_LB: tl.constexpr, BM: tl.constexpr,
                      BD: tl.constexpr):
    """dyi = dh·(1−f)·silu'(yi); the gate's whole gradient g = df − dh·silu(yi) gives
    dyf = g·(1−lb)·σ(1−σ) and the partial dlb = Σ_rows g·(1−σ) into DLB[pid_m]."""
    cols, mask, offs = _tile(M, D, BM, BD)
    sg, f, s, yi, lb = _gate_values(YI, YF, LB, offs, cols, mask, D, HAS_LB)
    dh = tl.load(DH + offs, mask=mask, other=0.0)
    g = tl.load(DF + offs, mask=mask, other=0.0) - dh * s
    tl.store(DYI + offs, (dh * (1.0 - f) * _dsilu(yi)).to(DYI.dtype.element_ty), mask=mask)
    tl.store(DYF + offs, (g * (1.0 - lb) * sg * (1.0 - sg)).to(DYF.dtype.element_ty), mask=mask)
    if HAS_LB:
        dlb = tl.sum(tl.where(mask, g * (1.0 - sg), 0.0), 0)
        tl.store(DLB + tl.program_id(0) * D + cols, dlb, mask=cols < D)


@triton.jit
def _output_fwd_kernel(YG, H, G, O, D, eps, BLOCK: tl.constexpr):
    """One row: o = yg·rstd·γ·silu(h)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    yg = tl.load(YG + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    h = tl.load(H + row * D + cols, mask=mask, other=0.0)
    g = tl.load(G + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(yg * yg, 0) / D + eps)
    tl.store(O + row * D + cols, (yg * rstd * g * h * tl.sigmoid(h)).to(O.dtype.element_ty), mask=mask)


@triton.jit
def _output_bwd_kernel(YG, H, G, DO, DHO, DYG, DG, M, D, eps, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """ROWS rows: with a = x̂₀·γ (x̂₀ = yg·rstd): dh_out = do·a·silu'(h); da = do·silu(h);
    RMSNorm backward dyg = rstd·(da·γ − x̂₀·mean(da·γ·x̂₀)); partial dγ = Σ_rows da·x̂₀ into DG[pid]."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    g = tl.load(G + cols, mask=mask, other=0.0).to(tl.float32)
    dg = tl.zeros([BLOCK], dtype=tl.float32)
    for r in range(ROWS):
        row = (pid * ROWS + r).to(tl.int64)
        if row < M:
            yg = tl.load(YG + row * D + cols, mask=mask, other=0.0).to(tl.float32)
            h = tl.load(H + row * D + cols, mask=mask, other=0.0)
            do = tl.load(DO + row * D + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = 1.0 / tl.sqrt(tl.sum(yg * yg, 0) / D + eps)
            x0 = yg * rstd
            tl.store(DHO + row * D + cols, do * x0 * g * _dsilu(h), mask=mask)
            da = do * h * tl.sigmoid(h)
            dg += da * x0
            gd = da * g
            dyg = rstd * (gd - x0 * (tl.sum(gd * x0, 0) / D))
            tl.store(DYG + row * D + cols, dyg.to(DYG.dtype.element_ty), mask=mask)
    tl.store(DG + pid * D + cols, dg, mask=mask)


def _tiles(M: int, D: int) -> tuple[dict, tuple[int, int]]:
    bm, bd = (16, 32) if _interpreting() else (32, min(128, triton.next_power_of_2(D)))
    return {"BM": bm, "BD": bd}, (triton.cdiv(M, bm), triton.cdiv(D, bd))


def _row_launch(D: int) -> dict:
    block = triton.next_power_of_2(D)
    return {"BLOCK": block, "num_warps": 1 if _interpreting() else min(16, max(4, block // 256))}


def gates(yi: torch.Tensor, yf: torch.Tensor, lb: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, D] pre-activations → (i, f) float32 [M, D]."""
    M, D = yi.shape
    i = torch.empty(M, D, dtype=torch.float32, device=yi.device)
    f = torch.empty_like(i)
    meta, grid = _tiles(M, D)
    _gates_fwd_kernel[grid](yi, yf, lb if lb is not None else yi, i, f, M, D, HAS_LB=lb is not None, **meta)
    return i, f


def _scan(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    M, D = i.shape
    return chunk_scan(i.view(B, M // B, D), f.view(B, M // B, D), h0, reverse=False, chunk=CHUNK)


class GatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, yi, yf, yg, lb, gain, h0, eps: float):
        B, T, D = yi.shape
        yi2, yf2, yg2 = (t.reshape(B * T, D).contiguous() for t in (yi, yf, yg))
        h0c = h0.float().contiguous() if h0 is not None else None
        i, f = gates(yi2, yf2, lb)
        h, last = _scan(i, f, h0c, B)
        del i, f
        o = torch.empty_like(yg2)
        _output_fwd_kernel[(B * T,)](yg2, h, gain, o, D, eps, **_row_launch(D))
        ctx.save_for_backward(yi2, yf2, yg2, lb, gain, h0c)
        ctx.set_materialize_grads(False)  # an unused final state then costs nothing in backward
        ctx.shape, ctx.eps, ctx.h0_dtype = (B, T, D), eps, None if h0 is None else h0.dtype
        return o.view(B, T, D), last

    @staticmethod
    def backward(ctx, do, dlast):
        yi, yf, yg, lb, gain, h0 = ctx.saved_tensors
        B, T, D = ctx.shape
        M = B * T
        i, f = gates(yi, yf, lb)
        h, _ = _scan(i, f, h0, B)
        del i
        dh_out = torch.zeros(M, D, dtype=torch.float32, device=yi.device)
        dyg = torch.zeros_like(yg)
        dgain = torch.zeros(D, dtype=torch.float32, device=yi.device)
        if do is not None:
            rows = 1 if _interpreting() else 16
            programs = triton.cdiv(M, rows)
            partial = torch.empty(programs, D, dtype=torch.float32, device=yi.device)
            _output_bwd_kernel[(programs,)](yg, h, gain, do.reshape(M, D).contiguous(), dh_out, dyg, partial, M, D,
                                            ctx.eps, ROWS=rows, **_row_launch(D))
            dgain = partial.sum(0)
        scan = lambda x, g, h0_, reverse, hf, hf0: chunk_scan(x, g, h0_, reverse, CHUNK, hf, hf0)  # noqa: E731
        dh, df, dh0 = scan_backward(dh_out.view(B, T, D), dlast, f.view(B, T, D), h.view(B, T, D), h0, scan)
        del h, f, dh_out
        dyi, dyf = torch.empty_like(yi), torch.empty_like(yf)
        meta, grid = _tiles(M, D)
        dlb = torch.empty(grid[0], D, dtype=torch.float32, device=yi.device) if lb is not None else None
        _gates_bwd_kernel[grid](yi, yf, lb if lb is not None else yi, dh, df, dyi, dyf,
                                dlb if dlb is not None else dh, M, D, HAS_LB=lb is not None, **meta)
        dlb = dlb.sum(0).to(lb.dtype) if lb is not None else None
        dh0 = dh0.to(ctx.h0_dtype) if dh0 is not None else None
        return (dyi.view(B, T, D), dyf.view(B, T, D), dyg.view(B, T, D), dlb, dgain.to(gain.dtype), dh0, None)


def hgrn_gated_fused(yi: torch.Tensor, yf: torch.Tensor, yg: torch.Tensor, lb: torch.Tensor | None,
                     gain: torch.Tensor, eps: float, h0: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of `naive.hgrn_gated_naive`: yi, yf, yg [B, T, D] → (o [B, T, D] in yg's dtype,
    final state h_T [B, D] float32)."""
    return GatedScan.apply(yi, yf, yg, lb, gain, h0, eps)


__all__ = ["gates", "hgrn_gated_fused"]
