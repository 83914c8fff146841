"""Triton GEMV for one token (decode at batch 1) with the work before the product fused in: the
normalisation and int8 quantisation of the input (and, for o_proj, the recurrence step; for down_proj,
the GLU) run in the GEMV's prologue. Twins: `naive.gemv_*_naive`.

A batch-1 step is latency-bound: 0.33 GB of packed weights take ~0.1 ms at HBM speed, but a layer
used to be eight launches, four of them single-block row kernels. Here a layer is four launches.
Each program recomputes the row statistics (norms, absmax) of its small input vector — a few KB read
from L2, cheap next to its share of the weights — so no separate row kernel and no grid sync.

The product uses `dp4a` (4 int8 products a instruction, exact int32): a 32-bit word of `i2` bytes
(bytes 4t..4t+3 of a row, codes c = w+1 at bits 2p of byte b for element 16t+4b+p) gives, for plane
p, `(word >> 2p) & 0x03030303`: four codes as int8 lanes, meeting an activation word built from
elements 16t+p, 16t+4+p, 16t+8+p, 16t+12+p. Σ q·(c−1) = Σ q·c − Σ q, so the codes need no
decoding. Under TRITON_INTERPRET=1 the same integer arithmetic runs without the PTX instruction.

Modes (what the prologue computes from the inputs, x̂ is the BitLinear input before its own norm):
    NORM   x ─▶ x̂ = rms_norm(x; pre, pre_eps)                    (i/f/g, gate/up, lm_head)
    STEP   [yi|yf|yg], h₀ ─▶ gates, h = f·h₀ + i (program 0 writes h to the new state),
           x̂ = rms_norm(yg; g_norm, eps) ⊙ silu(h)               (o_proj)
    GLU    [gate|up] ─▶ x̂ = silu(gate) ⊙ up                       (down_proj)
then q, s = int8 quant of rms_norm(x̂; γ_group, 1e-6), y = (Σ q·w)·β/s, stored or added into the output.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

MODE_NORM, MODE_STEP, MODE_GLU = 0, 1, 2


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _dot4(a, b, c, DP4A: tl.constexpr):
    """c + Σ over the four byte lanes of a·b (a's lanes signed int8, b's lanes 0..3), int32."""
    if DP4A:
        return tl.inline_asm_elementwise("dp4a.s32.s32 $0, $1, $2, $3;", "=r,r,r,r", [a, b, c],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        for lane in tl.static_range(4):
            c += ((a << (24 - 8 * lane)) >> 24) * ((b >> (8 * lane)) & 0xFF)
        return c


@triton.jit
def _rms(x, K, eps):
    """1/rms of a [BW, 4, 4] tile holding one row (zeros past K)."""
    return 1.0 / tl.sqrt(tl.sum(tl.sum(tl.sum(x * x, 2), 1), 0) / K + eps)


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.jit
def _silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _state(X, LB, H0, idx, mask, K, HAS_LB: tl.constexpr):
    """h = f·h₀ + i with f = lb + (1−lb)·σ(yf), i = silu(yi)·(1−f) (rowwise.naive.hgrn_gates_naive)."""
    f = tl.sigmoid(tl.load(X + K + idx, mask=mask, other=0.0))
    if HAS_LB:
        lb = tl.load(LB + idx, mask=mask, other=0.0)
        f = lb + (1 - lb) * f
    i = _silu(tl.load(X + idx, mask=mask, other=0.0)) * (1 - f)
    return f * tl.load(H0 + idx, mask=mask, other=0.0) + i


@triton.jit
def _xhat(X, PRE, LB, H0, idx, mask, K, r0, MODE: tl.constexpr, HAS_LB: tl.constexpr):
    """The BitLinear input x̂ at `idx` (see the module doc); r0 is the row's pre-norm rstd."""
    if MODE == 0:
        xh = tl.load(X + idx, mask=mask, other=0.0) * r0 * tl.load(PRE + idx, mask=mask, other=0.0)
    elif MODE == 1:
        yg = tl.load(X + 2 * K + idx, mask=mask, other=0.0)
        xh = yg * r0 * tl.load(PRE + idx, mask=mask, other=0.0) * _silu(_state(X, LB, H0, idx, mask, K, HAS_LB))
    else:
        xh = _silu(tl.load(X + idx, mask=mask, other=0.0)) * tl.load(X + K + idx, mask=mask, other=0.0)
    return xh


@triton.jit
def _codes(xh, rstd, gam, s):
    """int8 level of rms_norm(x̂)·γ·s, rounded half away from zero and clamped (bitlinear.naive)."""
    v = xh * rstd * gam * s
    q = tl.where(v >= 0, tl.floor(v + 0.5), -tl.floor(-v + 0.5))
    return tl.minimum(tl.maximum(q, -128.0), 127.0).to(tl.int32)


@triton.jit
def _decode_gemv_kernel(X, PRE, LB, H0, H1, GAIN, W, C, BETA, N, K, NG, KW, stride_wn, pre_eps,
                        MODE: tl.constexpr, HAS_LB: tl.constexpr, ACCUMULATE: tl.constexpr, DP4A: tl.constexpr,
                        BW: tl.constexpr, KW_EXACT: tl.constexpr, FULL: tl.constexpr,
                        BN: tl.constexpr):
    pid = tl.program_id(0)
    group = (pid * BN) // NG  # BN divides NG when there are several groups (see _prune)
    rn = pid * BN + tl.arange(0, BN)
    rw = tl.arange(0, BW)
    # the weights first: their loads are in flight while the prologue computes the row statistics
    w_ptr = W + rn[:, None].to(tl.int64) * stride_wn + rw[None, :]
    if BW == KW_EXACT:  # no mask along the row, so the loads can be 16 bytes wide
        wt = tl.load(w_ptr, mask=rn[:, None] < N, other=0)
    else:
        wt = tl.load(w_ptr, mask=(rn[:, None] < N) & (rw[None, :] < KW), other=0)
    # the input as a contiguous [BW, 4, 4] tile: element 16t + 4b + p at (t, b, p), so plane p of
    # weight word t meets lanes b of activation word (t, p) (see the module doc)
    t3 = tl.arange(0, BW)[:, None, None]
    b3 = tl.arange(0, 4)[None, :, None]
    p3 = tl.arange(0, 4)[None, None, :]
    idx = 16 * t3 + 4 * b3 + p3
    if FULL:  # K = 16·BW: a mask known all-true at compile time lets the loads be 16 bytes wide
        mask = idx < 16 * BW
    else:
        mask = idx < K
    r0 = 1.0
    if MODE == 0:
        r0 = _rms(tl.load(X + idx, mask=mask, other=0.0), K, pre_eps)
    elif MODE == 1:
        r0 = _rms(tl.load(X + 2 * K + idx, mask=mask, other=0.0), K, pre_eps)
        if pid == 0:
            tl.store(H1 + idx, _state(X, LB, H0, idx, mask, K, HAS_LB), mask=mask)
    xh = _xhat(X, PRE, LB, H0, idx, mask, K, r0, MODE, HAS_LB)
    rstd = _rms(xh, K, 1e-6)
    gam = tl.load(GAIN + group * K + idx, mask=mask, other=0.0)
    amax = tl.max(tl.max(tl.max(tl.abs(xh * rstd * gam), 2), 1), 0)
    s = tl.math.div_rn(1.0, tl.maximum(amax, 1e-5)) * 127.0  # as torch: reciprocal, then ·127
    q = _codes(xh, rstd, gam, s)  # [BW, 4, 4]
    words = tl.reduce((q & 0xFF) << (8 * b3), 1, _bit_or)  # [BW, 4]: activation word (t, p)
    codes = (wt[:, :, None] >> (2 * p3)) & 0x03030303  # [BN, BW, 4]: plane p of word t, lanes 0..3
    acc = _dot4(tl.broadcast_to(words[None, :, :], (BN, BW, 4)), codes, tl.zeros([BN, BW, 4], dtype=tl.int32), DP4A)
    total = tl.sum(tl.sum(acc, axis=2), axis=1) - tl.sum(tl.sum(tl.sum(q, 2), 1), 0)
    y = total.to(tl.float32) * (tl.load(BETA + group) / s)
    if ACCUMULATE:
        y += tl.load(C + rn, mask=rn < N, other=0.0)
    tl.store(C + rn, y, mask=rn < N)


def _configs():
    if _interpreting():
        return [triton.Config({"BN": 16}, num_warps=1)]
    return [triton.Config({"BN": bn}, num_warps=w) for bn, w in
            [(4, 4), (8, 4), (16, 4), (4, 8), (8, 8), (16, 8), (32, 8)]]


def _prune(configs, named_args, **kwargs):
    """Tiles inside one group (BN divides the group's rows, unless there is one group)."""
    n, ng = named_args["N"], named_args["NG"]
    return [c for c in configs if n == ng or ng % c.kwargs["BN"] == 0] or [min(configs, key=lambda c: c.kwargs["BN"])]


_tuned = triton.autotune(configs=_configs(), key=["N", "K", "MODE"], prune_configs_by={"early_config_prune": _prune},
                         restore_value=["C"])(_decode_gemv_kernel)


def words(packed: torch.Tensor) -> torch.Tensor:
    """`i2` bytes [N, ceil(K/4)] → int32 words [N, ceil(K/16)] (a free view when rows are whole words;
    else a copy padded with code-1 bytes, weight 0)."""
    if packed.shape[1] % 4 or not packed.is_contiguous():
        packed = F.pad(packed, (0, -packed.shape[1] % 4), value=0x55).contiguous()
    return packed.view(torch.int32)


def decode_gemv(mode: int, x: torch.Tensor, pre: torch.Tensor, gains: torch.Tensor, packed: torch.Tensor,
                beta: torch.Tensor, k: int, pre_eps: float = 1e-6, lb: torch.Tensor | None = None,
                h0: torch.Tensor | None = None, h1: torch.Tensor | None = None, out: torch.Tensor | None = None,
                accumulate: bool = False) -> torch.Tensor:
    """Launch one fused GEMV (mode and inputs as in the module doc); returns out float32 [1, N]."""
    w = words(packed)
    n, kw = w.shape
    if out is None:
        out = torch.empty(1, n, dtype=torch.float32, device=x.device)
    x = x.contiguous()
    ng = n // gains.shape[0]
    dummy = x
    _tuned[lambda meta: (triton.cdiv(n, meta["BN"]),)](
        x, pre if pre is not None else dummy, lb if lb is not None else dummy, h0 if h0 is not None else dummy,
        h1 if h1 is not None else dummy, gains, w, out, beta, n, k, ng, kw, w.stride(0), pre_eps,
        MODE=mode, HAS_LB=lb is not None, ACCUMULATE=accumulate, DP4A=not _interpreting(),
        BW=triton.next_power_of_2(kw), KW_EXACT=kw,
        FULL=k == 16 * triton.next_power_of_2(kw))
    return out
