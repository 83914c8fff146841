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
then q, s = int8 quant of rms_norm(x̂; γ_group, BITLINEAR_NORM_EPS), y = (Σ q·w)·β/s, stored or added into the output.

The row statistics come from one pass: the pre-norm's Σx², the BitLinear norm's Σx̂² and the absmax
are three independent reductions of one tuple, since x̂ = r₀·a with a = x·pre (or yg·g_norm·silu(h)),
so Σx̂² = r₀²·Σa² and max|x̂·rstd·γ| = r₀·rstd·max|a·γ|. Chained, they were three dependent block
reductions on every program's critical path (1,107 against 1,178 tokens/s, bench/gpu_decode.py, H200).
The reassociation moves float32 results by an ulp, which (rarely, at a tie) moves an int8 level: the
tests allow for that as for any other rounding order.

Programmatic dependent launch (`PDL`, Hopper): a launch may start while the launch before it still
runs; each program loads what no launch of the step writes (its weight tile, the norm gains, the lower
bound, the old state, β: `_operands`) and only then waits (`gdc_wait`) for the previous launch to
finish and its writes to be visible, and lets the next launch start (`gdc_launch_dependents`) once it
has waited, so at most two launches overlap. Every load
of an activation and every store come after the wait, so neither a read-after-write nor a
write-after-read crosses launches. CUDA-graph capture keeps these launches' programmatic edges.
Off under TRITON_INTERPRET=1 (the interpreter has no grid dependency control) and where this Triton
has no `launch_pdl` option.

What the batch-1 step's speed came from (1.3B shape, H200, bench/gpu_decode.py --variants; tokens/s):
- The product one bit plane at a time (`_tile_product`): 1,353 → 1,982. Unpacking all four planes at
  once held a [BN, BW, 4] int32 tensor three times over (codes, broadcast activations, products): the
  head's kernel spilled, and the gate/up kernel took more registers than one wave of its 704 programs
  allows.
- Loading the norm gains, lower bound, old state and β before the PDL wait, with the weights: 1,185 →
  1,367 (the same run's no-op baseline read 1,183).
- PDL: 1,774 without against 1,982 with, at the final code (it had bought ~1% when each launch's own
  latency chain was longer).
- Tried and dropped: one persistent launch for the whole step, with a grid-wide barrier (an atomic
  counter) between the products (`one_launch.py` at commit 947dcdc): 1,560 against 1,982. One 8-warp program a
  multiprocessor, at the 255-register limit, runs its tiles one after another; here each launch has
  hundreds of small programs in flight. Programs that loop over several tiles of one launch, making
  the codes once, were slower too (1,149 against 1,178), as were other tile shapes (`TILES`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..bitlinear.fused import ACT_FLOOR, NORM_EPS
from ..interpret import interpreting as _interpreting

MODE_NORM, MODE_STEP, MODE_GLU = 0, 1, 2


def _pdl_supported() -> bool:
    """This Triton can launch with programmatic dependent launch and emit its wait/launch instructions."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401
    except ImportError:
        return False
    return hasattr(CUDAOptions, "launch_pdl")


PDL = not _interpreting() and _pdl_supported()
"""Launch the decode GEMVs with programmatic dependent launch (see the module doc); bench/gpu_decode.py
switches it off to measure what it buys. Only takes effect on a GPU of compute capability ≥ 9.0."""


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
def _bit_or(a, b):
    return a | b


@triton.jit
def _stats_combine(s0, s1, m0, t0, t1, n0):
    return s0 + t0, s1 + t1, tl.maximum(m0, n0)


@triton.jit
def _stats(x, a, ag):
    """(Σx², Σa², max|ag|) of [BW, 4, 4] tiles, as one reduction (one pass, one set of barriers)."""
    s0, s1, m = tl.reduce((x * x, a * a, tl.abs(ag)), 2, _stats_combine)
    s0, s1, m = tl.reduce((s0, s1, m), 1, _stats_combine)
    return tl.reduce((s0, s1, m), 0, _stats_combine)


@triton.jit
def _wait_for_previous_launch(PDL: tl.constexpr):
    """Block until the previous launch has finished (its writes visible), then let the next one start."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _silu(x):
    return x * tl.sigmoid(x)


@triton.jit
def _state(X, lb, h0, idx, mask, K):
    """h = f·h₀ + i with f = lb + (1−lb)·σ(yf), i = silu(yi)·(1−f) (rowwise.naive.hgrn_gates_naive);
    lb, h₀ already loaded (lb = 0 where there is none: then f = σ(yf) exactly)."""
    f = tl.sigmoid(tl.load(X + K + idx, mask=mask, other=0.0))
    f = lb + (1 - lb) * f
    i = _silu(tl.load(X + idx, mask=mask, other=0.0)) * (1 - f)
    return f * h0 + i


@triton.jit
def _operands(PRE, LB, H0, idx, mask, MODE: tl.constexpr, HAS_LB: tl.constexpr):
    """(pre, lb, h₀) of the prologue at `idx`: the gains and the old state, which no launch of the step
    writes, so callers load them before they wait for the input (zeros where the mode needs none)."""
    pre = tl.zeros(idx.shape, dtype=tl.float32)
    lb = tl.zeros(idx.shape, dtype=tl.float32)
    h0 = tl.zeros(idx.shape, dtype=tl.float32)
    if MODE != 2:
        pre = tl.load(PRE + idx, mask=mask, other=0.0)
    if MODE == 1:
        h0 = tl.load(H0 + idx, mask=mask, other=0.0)
        if HAS_LB:
            lb = tl.load(LB + idx, mask=mask, other=0.0)
    return pre, lb, h0


@triton.jit
def _codes(xh, rstd, gam, s):
    """int8 level of rms_norm(x̂)·γ·s, rounded half away from zero and clamped (bitlinear.naive)."""
    v = xh * rstd * gam * s
    q = tl.where(v >= 0, tl.floor(v + 0.5), -tl.floor(-v + 0.5))
    return tl.minimum(tl.maximum(q, -128.0), 127.0).to(tl.int32)


@triton.jit
def _row_one_pass(X, pre, lb, h0, H1, gam, idx, mask, K, pre_eps, store_h, MODE: tl.constexpr):
    """(x̂, rstd of x̂ with the BitLinear eps, absmax of x̂·rstd·γ) from one tuple reduction; pre, lb, h₀
    from `_operands`. STEP mode writes h to H1 where store_h (one program)."""
    if MODE == 0:
        x = tl.load(X + idx, mask=mask, other=0.0)
        a = x * pre
    elif MODE == 1:
        x = tl.load(X + 2 * K + idx, mask=mask, other=0.0)
        h = _state(X, lb, h0, idx, mask, K)
        if store_h:
            tl.store(H1 + idx, h, mask=mask)
        a = x * pre * _silu(h)
    else:
        a = _silu(tl.load(X + idx, mask=mask, other=0.0)) * tl.load(X + K + idx, mask=mask, other=0.0)
        x = a
    sx, sa, m = _stats(x, a, a * gam)
    r0 = 1.0
    if MODE != 2:
        r0 = 1.0 / tl.sqrt(sx / K + pre_eps)
    rstd = 1.0 / tl.sqrt(r0 * r0 * sa / K + NORM_EPS)
    return a * r0, rstd, r0 * rstd * m


@triton.jit
def _weight_tile(W, row0, rows, rw, NG, KW, stride_wn, BW: tl.constexpr, KW_EXACT: tl.constexpr):
    """Packed words of `rows` (inside the group starting at row0) [BN, BW]; rows past the group load 0."""
    ptr = W + (row0 + rows)[:, None].to(tl.int64) * stride_wn + rw[None, :]
    if BW == KW_EXACT:  # no mask along the row, so the loads can be 16 bytes wide
        return tl.load(ptr, mask=rows[:, None] < NG, other=0)
    else:
        return tl.load(ptr, mask=(rows[:, None] < NG) & (rw[None, :] < KW), other=0)


@triton.jit
def _activation_words(xh, rstd, gam, amax, beta):
    """int8 codes of x̂ [BW, 4, 4] packed four to a word → (words [BW, 4], Σq, output scale β/s)."""
    s = tl.math.div_rn(1.0, tl.maximum(amax, ACT_FLOOR)) * 127.0  # as torch: reciprocal, then ·127
    q = _codes(xh, rstd, gam, s)
    words = tl.reduce((q & 0xFF) << (8 * tl.arange(0, 4)[None, :, None]), 1, _bit_or)  # activation word (t, p)
    return words, tl.sum(tl.sum(tl.sum(q, 2), 1), 0), beta / s


@triton.jit
def _tile_product(wt, words, qsum, scale, c, DP4A: tl.constexpr):
    """c + (Σ q·w)·β/s for the rows of the weight words wt [BN, BW] (see the module doc) → [BN]. One
    bit plane at a time, so the unpacked codes take a quarter of the registers."""
    plane = tl.arange(0, 4)[None, :]
    acc = tl.zeros(wt.shape, dtype=tl.int32)
    for p in tl.static_range(4):
        lanes = tl.sum(tl.where(plane == p, words, 0), axis=1)  # [BW]: activation word (t, p)
        acc = _dot4(lanes[None, :], (wt >> (2 * p)) & 0x03030303, acc, DP4A)
    return (tl.sum(acc, axis=1) - qsum).to(tl.float32) * scale + c


@triton.jit
def _decode_gemv_kernel(X, PRE, LB, H0, H1, GAIN, W, C, BETA, N, K, NG, KW, stride_wn, pre_eps,
                        MODE: tl.constexpr, HAS_LB: tl.constexpr, ACCUMULATE: tl.constexpr, DP4A: tl.constexpr,
                        BW: tl.constexpr, KW_EXACT: tl.constexpr, FULL: tl.constexpr, PDL: tl.constexpr,
                        BN: tl.constexpr):
    """Program (p, g): rows p·BN … p·BN + BN − 1 of group g, whose int8 codes it makes itself."""
    pid = tl.program_id(0)
    group = tl.program_id(1)
    row0 = group * NG
    rows = pid * BN + tl.arange(0, BN)
    # the weights first: no launch writes them, so their loads are in flight before the wait below
    # and while the prologue computes the row statistics
    wt = _weight_tile(W, row0, rows, tl.arange(0, BW), NG, KW, stride_wn, BW, KW_EXACT)
    # the input as a contiguous [BW, 4, 4] tile: element 16t + 4b + p at (t, b, p), so plane p of
    # weight word t meets lanes b of activation word (t, p) (see the module doc)
    idx = 16 * tl.arange(0, BW)[:, None, None] + 4 * tl.arange(0, 4)[None, :, None] + tl.arange(0, 4)[None, None, :]
    if FULL:  # K = 16·BW: a mask known all-true at compile time lets the loads be 16 bytes wide
        mask = idx < 16 * BW
    else:
        mask = idx < K
    gam = tl.load(GAIN + group * K + idx, mask=mask, other=0.0)
    pre, lb, h0 = _operands(PRE, LB, H0, idx, mask, MODE, HAS_LB)
    beta = tl.load(BETA + group)
    _wait_for_previous_launch(PDL)  # everything below reads or writes what other launches touch
    c = tl.zeros([BN], dtype=tl.float32)
    if ACCUMULATE:  # issued now, not after the product: its latency hides behind the prologue
        c = tl.load(C + row0 + rows, mask=rows < NG, other=0.0)
    xh, rstd, amax = _row_one_pass(X, pre, lb, h0, H1, gam, idx, mask, K, pre_eps, pid + group == 0, MODE)
    words, qsum, scale = _activation_words(xh, rstd, gam, amax, beta)
    tl.store(C + row0 + rows, _tile_product(wt, words, qsum, scale, c, DP4A), mask=rows < NG)


def _launch_config(ng: int, bw: int) -> tuple[int, int]:
    """(rows per tile, warps). Fixed, not autotuned: timed one by one, isolated launches ranked the
    tiles differently from launches in a decode step, and the autotuner's picks moved a step by ~20%
    between runs. From tiles timed as chains of graph-captured PDL launches over weights larger than
    L2 (1.3B shape, H200): 16 rows with 4 warps was best or within ~10% for the d×d, 3d×d and 2I×d
    products; down_proj (K = 5632, 512 words a row) wants 8 warps (7.5 against 15 µs). Re-timed after
    the plane-at-a-time product, as whole steps: 16 rows with 8 warps for the d-wide products 1,696–1,706
    against 1,973–1,982 tokens/s; lm_head tiles of 32 to 128 rows (4 or 8 warps) all fell within
    1,973–2,026 over two runs, which is the spread between runs; 32/4 takes the fewest registers (124 a
    thread against 170 for 64/4, sm_90 with Triton 3.9; none spills)."""
    if _interpreting():
        return 16, 1
    return TILES["head" if ng >= 16384 else "long_k" if bw >= 512 else "d"]


TILES = {"d": (16, 4), "long_k": (16, 8), "head": (32, 4)}
"""(rows per tile, warps) by product: d-wide inputs, down_proj's long rows, the 32000-row head
(`_launch_config`; bench/gpu_decode.py --variants times others)."""


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
    groups = gains.shape[0]
    ng = n // groups
    dummy = x
    pdl = PDL and torch.cuda.get_device_capability(x.device)[0] >= 9
    bn, warps = _launch_config(ng, triton.next_power_of_2(kw))
    programs = triton.cdiv(ng, bn)
    _decode_gemv_kernel[(programs, groups)](
        x, pre if pre is not None else dummy, lb if lb is not None else dummy, h0 if h0 is not None else dummy,
        h1 if h1 is not None else dummy, gains, w, out, beta, n, k, ng, kw, w.stride(0), pre_eps,
        MODE=mode, HAS_LB=lb is not None, ACCUMULATE=accumulate, DP4A=not _interpreting(),
        BW=triton.next_power_of_2(kw), KW_EXACT=kw,
        FULL=k == 16 * triton.next_power_of_2(kw), PDL=pdl, BN=bn, num_warps=warps,
        **({"launch_pdl": True} if pdl else {}))
    return out
