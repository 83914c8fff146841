"""Triton kernels for a decode step of many sequences at once (one token each, M = 2 … 256 rows):
row kernels that end in int8 codes, and a tensor-core product that reads the codes bit plane by
bit plane. Twins: `naive.planar_*` (the rowwise twins, then a permutation) and `naive.ternary_gemm_naive`.

Planar codes. A packed weight byte j holds the codes of elements 4j, 4j+1, 4j+2, 4j+3 (`i2`), so bit
plane p of a [BN, BJ] byte tile (`(byte >> 2p) & 3`, minus 1) is the weight matrix of elements 4j+p.
The row kernels store the activation codes so those elements sit together: element k of a row goes to
column (k mod 4)·KB + k div 4 (KB = ceil(K/4)). Plane p's activations are then one contiguous
[BM, BJ] tile, and a K step is four `tl.dot`s of depth BJ on tiles that need no reshaping (the
interleaved widening of `packed.py`, a [BN, BK/4, 4] broadcast, goes through shared memory).

Determinism. Every row's result is the same whatever the batch around it: the row kernels work one
row a program, the product sums exactly (int32) and each output element is written by one program
(no split-K, no atomics), with the same float epilogue at every tile shape. So a sequence decodes to
the same tokens alone or among 255 others (serve.py's batched scheduler relies on it).

Tiles are fixed per batch bucket and product kind (`TILES`, bench/gpu_decode.py --variants), not autotuned:
the autotuner's picks moved batch-64 decode between 22k and 31k tokens/s from run to run.
PDL as in `decode.py`: each program loads what no launch of the step writes (weights, gains), then
waits for the previous launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..bitlinear.fused import NORM_EPS, quantize_row
from .decode import PDL as _PDL_DEFAULT
from .decode import _interpreting, _wait_for_previous_launch

PDL = _PDL_DEFAULT
"""Programmatic dependent launch for these kernels (bench/gpu_decode.py switches it to measure it)."""


@triton.jit
def _rms(x, K, eps):
    return 1.0 / tl.sqrt(tl.sum(x * x, 0) / K + eps)


@triton.jit
def _silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _store_planar(xn, cols, mask, GAIN, Q, S, K, KB, PLANAR_END):
    """int8 codes of rms_norm(xn)·γ (BitLinear eps) at planar columns of one row Q, scale to S; columns
    past K (padding up to 4·KB) get code 0."""
    gam = tl.load(GAIN + cols, mask=mask, other=0.0)
    q, s = quantize_row(xn * _rms(xn, K, NORM_EPS) * gam, mask)
    tl.store(Q + (cols % 4) * KB + cols // 4, q.to(tl.int8), mask=cols < PLANAR_END)
    tl.store(S, s)


@triton.jit
def _rows_norm_kernel(X, PRE, GAINS, Q, S, K, KB, stride_x, stride_qg, stride_qm, stride_sg, pre_eps,
                      G: tl.constexpr, HAS_PRE: tl.constexpr, PDL: tl.constexpr, BLOCK: tl.constexpr):
    """Row m: x ─(RMSNorm pre)?─▶ for each of G gains, planar codes and scale."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < K
    pre = tl.load(PRE + cols, mask=mask, other=0.0)
    _wait_for_previous_launch(PDL)
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_PRE:
        x = x * _rms(x, K, pre_eps) * pre
    for g in tl.static_range(G):
        _store_planar(x, cols, mask, GAINS + g * K, Q + g * stride_qg + row * stride_qm, S + g * stride_sg + row,
                      K, KB, 4 * KB)


@triton.jit
def _rows_step_kernel(Y, LB, STATE, GN, ON, Q, S, D, KB, stride_y, stride_h, stride_qm, eps,
                      HAS_LB: tl.constexpr, PDL: tl.constexpr, BLOCK: tl.constexpr):
    """Row m: gates from [yi | yf | yg], h = f·h + i (in place), o = g_norm(yg)·silu(h) → o_proj's codes."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < D
    lb = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_LB:
        lb = tl.load(LB + cols, mask=mask, other=0.0)
    gn = tl.load(GN + cols, mask=mask, other=0.0)
    _wait_for_previous_launch(PDL)
    y = Y + row * stride_y
    f = tl.sigmoid(tl.load(y + D + cols, mask=mask, other=0.0))
    if HAS_LB:
        f = lb + (1 - lb) * f
    i = _silu(tl.load(y + cols, mask=mask, other=0.0)) * (1 - f)
    h = f * tl.load(STATE + row * stride_h + cols, mask=mask, other=0.0) + i
    tl.store(STATE + row * stride_h + cols, h, mask=mask)
    yg = tl.load(y + 2 * D + cols, mask=mask, other=0.0)
    o = yg * _rms(yg, D, eps) * gn * _silu(h)
    _store_planar(o, cols, mask, ON, Q + row * stride_qm, S + row, D, KB, 4 * KB)


@triton.jit
def _rows_glu_kernel(Y, DN, Q, S, I, KB, stride_y, stride_qm, PDL: tl.constexpr, BLOCK: tl.constexpr):
    """Row m: silu(gate)·up from [gate | up] → down_proj's codes."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < I
    _wait_for_previous_launch(PDL)
    y = Y + row * stride_y
    a = _silu(tl.load(y + cols, mask=mask, other=0.0)) * tl.load(y + I + cols, mask=mask, other=0.0)
    _store_planar(a, cols, mask, DN, Q + row * stride_qm, S + row, I, KB, 4 * KB)


@triton.jit
def _planar_gemm_kernel(A, W, C, S, BETA, M, N, KB, NG, stride_ag, stride_am, stride_sg, stride_wn, stride_cm,
                        ACCUMULATE: tl.constexpr, PDL: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                        BJ: tl.constexpr):
    """Program (n, m): output tile rows m·BM…, columns n·BN… (inside one group, BN divides NG)."""
    pid_n, pid_m = tl.program_id(0), tl.program_id(1)
    group = (pid_n * BN) // NG
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BJ)
    w_ptr = W + rn[None, :].to(tl.int64) * stride_wn + rj[:, None]  # [BJ, BN]: byte j of row n
    a_ptr = A + group.to(tl.int64) * stride_ag + rm[:, None].to(tl.int64) * stride_am + rj[None, :]
    beta = tl.load(BETA + group)
    # the first weight tile is in flight before the wait: no launch of the step writes weights
    wt = tl.load(w_ptr, mask=(rn[None, :] < N) & (rj[:, None] < KB), other=0x55)
    _wait_for_previous_launch(PDL)
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    for j0 in range(0, KB, BJ):
        nxt = tl.load(w_ptr + j0 + BJ, mask=(rn[None, :] < N) & (j0 + BJ + rj[:, None] < KB), other=0x55)
        amask = (rm[:, None] < M) & (j0 + rj[None, :] < KB)
        for p in tl.static_range(4):
            a = tl.load(a_ptr + p * KB + j0, mask=amask, other=0)
            w = ((wt >> (2 * p)) & 3).to(tl.int8) - 1  # padding 0x55 = code 1 = weight 0
            acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        wt = nxt
    s = tl.load(S + group.to(tl.int64) * stride_sg + rm, mask=rm < M, other=1.0)
    y = acc.to(tl.float32) * (beta / s[:, None])
    c_ptr = C + rm[:, None].to(tl.int64) * stride_cm + rn[None, :]
    cmask = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE:
        y += tl.load(c_ptr, mask=cmask, other=0.0)
    tl.store(c_ptr, y, mask=cmask)


TILES = {
    (16, "wide"): (16, 32, 128, 4), (16, "narrow"): (16, 32, 128, 4),
    (32, "wide"): (32, 32, 128, 4), (32, "narrow"): (32, 32, 128, 4),
    (64, "wide"): (64, 32, 128, 4), (64, "narrow"): (64, 32, 128, 4),
    (128, "wide"): (64, 64, 128, 4), (128, "narrow"): (64, 32, 128, 4),
    (256, "wide"): (128, 64, 64, 8), (256, "narrow"): (128, 64, 64, 8),
}
"""(batch bucket: rows up to, product kind) → (BM, BN, BJ, warps); larger batches use the 256 entries.
"narrow": outputs of ≤ NARROW columns (o_proj, down_proj: d), whose few column tiles leave SMs idle;
"wide": i/f/g, gate/up, lm_head. BN is halved where it does not divide a group's rows.
From bench/gpu_decode.py --variants (1.3B shape, H200; batched step tokens/s at batch 64 / 256):
64/32/128/4 gave 39.5k at batch 64, against 36.9k for BN 16, 28.6k for BM 32 and 26.2k for 64/64/64;
128/64/64/8 gave 67.1k at batch 256, against 63.6k for 64/64/128/4 and 61.5k for 128/128/64/8."""

NARROW = 4096

PDL_MAX_ROWS = 64
"""PDL for batches up to this many rows only: at batch 64 it bought 39.4k against 35.5k tokens/s, at
batch 256 it cost 67.1k against 75.6k (a launch's programs that wait hold SM slots the running
launch's many programs could use)."""


def _tile(m: int, groups: int, n: int) -> tuple[int, int, int, int]:
    """(BM, BN, BJ, warps) for m rows and n output columns in `groups` groups; with several groups BN
    is halved until it divides a group's rows."""
    kind = "narrow" if n <= NARROW else "wide"
    buckets = sorted(b for b, k in TILES if k == kind)
    bucket = next((b for b in buckets if m <= b), buckets[-1])
    bm, bn, bj, warps = (16, 16, 32, 1) if _interpreting() else TILES[bucket, kind]
    while groups > 1 and (n // groups) % bn:
        bn //= 2
    return bm, bn, bj, warps


def _row_launch(k: int) -> dict:
    block = triton.next_power_of_2(k)
    return {"BLOCK": block, "num_warps": 1 if _interpreting() else min(16, max(4, block // 256))}


def _pdl(device: torch.device, rows: int) -> dict:
    on = PDL and rows <= PDL_MAX_ROWS and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
    return {"PDL": on, **({"launch_pdl": True} if on else {})}


def planar_width(k: int) -> int:
    """Columns of a row of planar codes: 4·ceil(k/4)."""
    return 4 * triton.cdiv(k, 4)


def _codes(g: int, m: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.empty(g, m, planar_width(k), dtype=torch.int8, device=device),
            torch.empty(g, m, dtype=torch.float32, device=device))


def rows_norm(x: torch.Tensor, pre: torch.Tensor | None, pre_eps: float, gains: torch.Tensor):
    """x [M, K] (rows may be strided) → planar codes [G, M, 4·ceil(K/4)] int8 and scales [G, M]."""
    m, k = x.shape
    q, s = _codes(gains.shape[0], m, k, x.device)
    _rows_norm_kernel[(m,)](x, pre if pre is not None else gains, gains, q, s, k, planar_width(k) // 4, x.stride(0),
                            q.stride(0), q.stride(1), s.stride(0), pre_eps, G=gains.shape[0], HAS_PRE=pre is not None,
                            **_pdl(x.device, m), **_row_launch(k))
    return q, s


def rows_step(y: torch.Tensor, state: torch.Tensor, lb: torch.Tensor | None, g_norm: torch.Tensor,
              o_norm: torch.Tensor, eps: float):
    """y = [yi | yf | yg] [M, 3d], state [M, d] updated in place → o_proj's planar codes [1, M, ·], scales [1, M]."""
    m, d = state.shape
    q, s = _codes(1, m, d, y.device)
    _rows_step_kernel[(m,)](y, lb if lb is not None else g_norm, state, g_norm, o_norm, q, s, d, planar_width(d) // 4,
                            y.stride(0), state.stride(0), q.stride(1), eps, HAS_LB=lb is not None,
                            **_pdl(y.device, m), **_row_launch(d))
    return q, s


def rows_glu(y: torch.Tensor, down_norm: torch.Tensor):
    """y = [gate | up] [M, 2I] → down_proj's planar codes [1, M, ·] and scales [1, M]."""
    m, i = y.shape[0], y.shape[1] // 2
    q, s = _codes(1, m, i, y.device)
    _rows_glu_kernel[(m,)](y, down_norm, q, s, i, planar_width(i) // 4, y.stride(0), q.stride(1),
                           **_pdl(y.device, m), **_row_launch(i))
    return q, s


def planar_gemm(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """Planar codes q [G, M, 4·KB], s [G, M], `i2` weights [G·Ng, KB], β [G] → float32 [M, N] (stored, or
    added into `out` when accumulate)."""
    g, m, _ = q.shape
    n, kb = packed.shape
    ng = n // g
    if g > 1 and ng % 16:
        raise ValueError(f"planar_gemm: {ng} output rows per group is not a multiple of 16")
    if out is None:
        out = torch.empty(m, n, dtype=torch.float32, device=q.device)
    bm, bn, bj, warps = _tile(m, g, n)
    grid = (triton.cdiv(n, bn), triton.cdiv(m, bm))
    _planar_gemm_kernel[grid](q, packed, out, s, beta, m, n, kb, ng, q.stride(0), q.stride(1), s.stride(0),
                              packed.stride(0), out.stride(0), ACCUMULATE=accumulate, BM=bm, BN=bn, BJ=bj,
                              num_warps=warps, **_pdl(q.device, m))
    return out
