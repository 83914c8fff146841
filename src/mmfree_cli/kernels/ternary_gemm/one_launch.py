"""One launch for a whole batch-1 decode step: a persistent Triton kernel that runs every layer's four
fused GEMVs (`decode.py`: the norms, quantisation, recurrence and GLU in each product's prologue) and
the head, with a grid-wide barrier between the products. Twin: `naive.decode_token_naive`.

Why: at batch 1 the 1.3B step reads 0.33 GB of packed weights (~70 µs at HBM speed) but took ~850 µs
as 97 launches, each paying its own chain of latencies — wait for the previous launch, load the
input, reduce, quantise, multiply, store, drain. Here the programs stay resident and meet at a
barrier instead, and each one issues the loads of its next weight tile *before* it waits, so the
weight latency hides behind the barrier and the prologue.

Work: the grid has `nprog` programs, all resident at once (no more than fit on the GPU together,
else the barrier would wait for programs that cannot start). A product of G groups × Ng rows is cut
into tiles of BN rows; program p takes tiles p, p + nprog, …, and makes a group's int8 codes (the
prologue) when its tiles enter that group. Phases, each ending in the barrier:

    0            x ← embedding[token] (float32 residual stream)
    1 + 4l + 0   y ← [i|f|g] projections of attn_norm(x)                          (decode MODE_NORM)
    1 + 4l + 1   h ← recurrence; x += o_proj(g_norm(yg) ⊙ silu(h))                (MODE_STEP)
    1 + 4l + 2   y ← [gate|up] projections of mlp_norm(x)                          (MODE_NORM)
    1 + 4l + 3   x += down_proj(silu(gate) ⊙ up)                                   (MODE_GLU)
    1 + 4L       logits ← lm_head(norm(x))                                         (MODE_NORM)

The barrier is a counter in global memory: each program adds 1 with release semantics when its
phase is done (after a block barrier, so all its threads' stores come first) and, before phase k,
spins with acquire semantics until the counter reaches k·nprog. The last program to finish the head
sets the counter back to 0 for the next launch (everyone has passed every wait by then).

Under TRITON_INTERPRET=1 programs run one after another, so a barrier would wait for ever: there
the grid is one program, which does every tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decode import _activation_words, _interpreting, _operands, _row_one_pass, _tile_product, _weight_tile

_NORM, _STEP, _GLU = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)  # decode.MODE_*

BN_D = 16
"""Rows a tile for the d-wide inputs (i/f/g, o, gate/up) and the head."""
BN_DOWN = 8
"""Rows a tile for down_proj, whose rows are 2.75× longer (I = 5632 at 1.3B)."""
NUM_WARPS = 8
PROGRAMS_PER_SM = 1


@triton.jit
def _arrive(SYNC):
    """This program's phase is done: its threads' stores are ordered before the counter's increment."""
    tl.debug_barrier()
    tl.atomic_add(SYNC, 1, sem="release", scope="gpu")


@triton.jit
def _wait(SYNC, target):
    """Spin until every program has arrived `target // nprog` times (acquire: their stores are visible).
    Polling by atomic adds of 0 measured a little faster than by `ld.acquire` loads (823 against 863 µs
    a step, H200)."""
    while tl.atomic_add(SYNC, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit
def _now(TRACE: tl.constexpr):
    """The global nanosecond timer ([1] tensor), for TRACE builds."""
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [tl.zeros([1], dtype=tl.int32)],
                                     dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _stamp(T, pid, k, i, TRACE: tl.constexpr):
    """T[pid, k, i] ← now (TRACE builds only: where a program's time goes, phase by phase)."""
    if TRACE:
        tl.store(T + (pid * 512 + k) * 4 + i + tl.arange(0, 1), _now(TRACE))


@triton.jit
def _tile_rows(j, tiles, total, BN: tl.constexpr):
    """(group, first row of the tile in its group) of tile j; past the last tile, rows no mask lets through."""
    g = j // tiles
    blk = tl.where(j < total, j - g * tiles, tiles)
    return g, blk * BN


@triton.jit
def _phase(X, PRE, LB, H0, H1, GAIN, W, C, BETA, G, NG, K, KW, pre_eps, SYNC, k, pid, nprog, T,
           MODE: tl.constexpr, ACCUMULATE: tl.constexpr, DP4A: tl.constexpr, BW: tl.constexpr,
           KW_EXACT: tl.constexpr, FULL: tl.constexpr, BN: tl.constexpr, TRACE: tl.constexpr):
    """One fused GEMV (`decode._decode_gemv_kernel`'s arithmetic) as phase k's share of this program:
    wait for phase k − 1, then a contiguous run of tiles (so mostly one group: one prologue), with the
    weights of the two tiles after the current one in flight, then arrive."""
    _stamp(T, pid, k, 0, TRACE)
    rb = tl.arange(0, BN)
    rw = tl.arange(0, BW)
    idx = 16 * tl.arange(0, BW)[:, None, None] + 4 * tl.arange(0, 4)[None, :, None] + tl.arange(0, 4)[None, None, :]
    if FULL:
        mask = idx < 16 * BW
    else:
        mask = idx < K
    tiles = tl.cdiv(NG, BN)
    total = G * tiles
    per = tl.cdiv(total, nprog)
    first = pid * per
    last = tl.minimum(first + per, total)
    # what nothing in this launch writes loads during the wait: the first two tiles' weights, the
    # first group's gains and scale, the norm weights, lower bound and old state
    g, r = _tile_rows(first, tiles, total, BN)
    wt = _weight_tile(W, g * NG, r + rb, rw, NG, KW, KW, BW, KW_EXACT)
    g1, r1 = _tile_rows(tl.where(first + 1 < last, first + 1, total), tiles, total, BN)
    wt1 = _weight_tile(W, g1 * NG, r1 + rb, rw, NG, KW, KW, BW, KW_EXACT)
    g = tl.minimum(g, G - 1)
    gam = tl.load(GAIN + g * K + idx, mask=mask, other=0.0)
    beta = tl.load(BETA + g)
    pre, lb, h0 = _operands(PRE, LB, H0, idx, mask, MODE, True)
    _wait(SYNC, k * nprog)
    _stamp(T, pid, k, 1, TRACE)
    cur = -1
    words = tl.zeros([BW, 4], dtype=tl.int32)
    qsum = tl.sum(tl.sum(words, 1), 0)
    scale = 0.0
    for j in range(first, last):
        g, r = _tile_rows(j, tiles, total, BN)
        g2, r2 = _tile_rows(tl.where(j + 2 < last, j + 2, total), tiles, total, BN)
        wt2 = _weight_tile(W, g2 * NG, r2 + rb, rw, NG, KW, KW, BW, KW_EXACT)
        rows = r + rb
        c = tl.zeros([BN], dtype=tl.float32)
        if ACCUMULATE:
            c = tl.load(C + g * NG + rows, mask=rows < NG, other=0.0)
        if g != cur:  # this program's first tile of group g: make g's int8 codes
            if j != first:
                gam = tl.load(GAIN + g * K + idx, mask=mask, other=0.0)
                beta = tl.load(BETA + g)
            xh, rstd, amax = _row_one_pass(X, pre, lb, h0, H1, gam, idx, mask, K, pre_eps, pid + g == 0, MODE)
            words, qsum, scale = _activation_words(xh, rstd, gam, amax, beta)
            cur = g
        tl.store(C + g * NG + rows, _tile_product(wt, words, qsum, scale, c, DP4A), mask=rows < NG)
        if j == first:
            _stamp(T, pid, k, 2, TRACE)
        wt, wt1 = wt1, wt2
    _stamp(T, pid, k, 3, TRACE)
    _arrive(SYNC)


@triton.jit
def _decode_token_kernel(TOK, EMB, X, Y, H0, H1, SYNC, LOGITS, T,
                         ATTN_NORM, G_NORM, MLP_NORM, LB,
                         IFG_W, IFG_B, IFG_G, O_W, O_B, O_G, GU_W, GU_B, GU_G, DN_W, DN_B, DN_G,
                         FIN_NORM, HD_W, HD_B, HD_G,
                         L, D, I, V, eps,
                         DP4A: tl.constexpr, BW_D: tl.constexpr, BW_I: tl.constexpr, FULL_D: tl.constexpr,
                         FULL_I: tl.constexpr, KW_D: tl.constexpr, KW_I: tl.constexpr, BN_D: tl.constexpr,
                         BN_DOWN: tl.constexpr, EB: tl.constexpr, TRACE: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    # phase 0: the token's embedding row into the residual stream
    tok = tl.load(TOK)
    for off in range(pid * EB, D, nprog * EB):
        o = off + tl.arange(0, EB)
        tl.store(X + o, tl.load(EMB + tok * D + o, mask=o < D).to(tl.float32), mask=o < D)
    _arrive(SYNC)
    for l in range(L):
        k = 1 + 4 * l
        _phase(X, ATTN_NORM + l * D, LB, H0, H1, IFG_G + l * 3 * D, IFG_W + l * 3 * D * KW_D, Y, IFG_B + 3 * l,
               3, D, D, KW_D, eps, SYNC, k, pid, nprog, T,
               _NORM, False, DP4A, BW_D, KW_D, FULL_D, BN_D, TRACE)
        _phase(Y, G_NORM + l * D, LB + l * D, H0 + l * D, H1 + l * D, O_G + l * D, O_W + l * D * KW_D, X, O_B + l,
               1, D, D, KW_D, eps, SYNC, k + 1, pid, nprog, T,
               _STEP, True, DP4A, BW_D, KW_D, FULL_D, BN_D, TRACE)
        _phase(X, MLP_NORM + l * D, LB, H0, H1, GU_G + l * D, GU_W + l * 2 * I * KW_D, Y, GU_B + l,
               1, 2 * I, D, KW_D, eps, SYNC, k + 2, pid, nprog, T,
               _NORM, False, DP4A, BW_D, KW_D, FULL_D, BN_D, TRACE)
        _phase(Y, MLP_NORM, LB, H0, H1, DN_G + l * I, DN_W + l * D * KW_I, X, DN_B + l,
               1, D, I, KW_I, eps, SYNC, k + 3, pid, nprog, T,
               _GLU, True, DP4A, BW_I, KW_I, FULL_I, BN_DOWN, TRACE)
    _phase(X, FIN_NORM, LB, H0, H1, HD_G, HD_W, LOGITS, HD_B,
           1, V, D, KW_D, eps, SYNC, 1 + 4 * L, pid, nprog, T,
           _NORM, False, DP4A, BW_D, KW_D, FULL_D, BN_D, TRACE)
    # _phase arrived once more; the last program to do so resets the counter for the next launch
    if tl.atomic_add(SYNC, 0, sem="acquire", scope="gpu") == (2 + 4 * L) * nprog:
        tl.atomic_cas(SYNC, (2 + 4 * L) * nprog, 0, sem="relaxed", scope="gpu")


def aligned(d: int, inner: int) -> bool:
    """The one-launch step needs whole 32-bit words of codes per row (16 weights): d and I multiples of 16."""
    return d % 16 == 0 and inner % 16 == 0


_resident: dict[tuple, int] = {}
compiled: dict[tuple, dict] = {}
"""Registers, spills and grid of each compiled configuration (bench/gpu_decode.py prints them)."""


def _programs(args: tuple, options: dict, device: torch.device) -> int:
    """Programs in the grid: PROGRAMS_PER_SM a multiprocessor, fewer if that many would not all be
    resident at once (by the compiled kernel's registers and shared memory): the barrier waits for
    every program, so one that cannot start until another ends would hang the launch."""
    if _interpreting():
        return 1
    key = (device.index, PROGRAMS_PER_SM, tuple(sorted(options.items())))
    if key not in _resident:
        props = torch.cuda.get_device_properties(device)
        kernel = _decode_token_kernel.warmup(*args, grid=(1,), **options)  # compiles, does not launch
        kernel._init_handles()  # loads the binary, which reports its registers
        warps = options["num_warps"]
        regs_per_warp = -(-kernel.n_regs * 32 // 256) * 256  # registers are allocated 256 at a time a warp
        fit = min(props.regs_per_multiprocessor // (regs_per_warp * warps),
                  props.max_threads_per_multi_processor // (32 * warps),
                  props.shared_memory_per_multiprocessor // max(kernel.metadata.shared, 1))
        if fit < 1:
            raise RuntimeError(f"one_launch: a program needs {kernel.n_regs} registers a thread × {warps} warps, "
                               "more than a multiprocessor has")
        _resident[key] = min(PROGRAMS_PER_SM, fit) * props.multi_processor_count
        compiled[key] = {"registers": kernel.n_regs, "spills": kernel.n_spills, "programs": _resident[key],
                         "shared": kernel.metadata.shared}
    return _resident[key]


def decode_token(tokens: torch.Tensor, emb: torch.Tensor, w: dict[str, torch.Tensor], h0: torch.Tensor,
                 h1: torch.Tensor, eps: float, work: dict[str, torch.Tensor]) -> torch.Tensor:
    """One decode step of one sequence in one launch. tokens: int64 [1]; emb: [V, d]; w: the stacked
    weights (`naive.decode_token_naive` names them); h0 → h1: float32 [L, d] (read, written);
    work: scratch buffers x [d], y [max(3d, 2I)], sync int32 [1] (zero) → logits float32 [1, V]."""
    L, d = h0.shape
    inner = w["down_packed"].shape[2] * 4
    V = w["head_packed"].shape[0]
    assert aligned(d, inner), "decode_token: d and I must be multiples of 16"
    kw_d, kw_i = d // 16, inner // 16
    logits = torch.empty(1, V, dtype=torch.float32, device=h0.device)
    interp = _interpreting()
    trace = work.get("trace")  # int64 [nprog, 512, 4], filled with TRACE (bench/gpu_decode.py --trace)
    args = (tokens, emb, work["x"], work["y"], h0, h1, work["sync"], logits, trace if trace is not None else logits,
            w["attn_norm"], w["g_norm"], w["mlp_norm"], w["lower_bound"],
            w["ifg_packed"].view(torch.int32), w["ifg_beta"], w["ifg_norms"],
            w["o_packed"].view(torch.int32), w["o_beta"], w["o_norms"],
            w["gate_packed"].view(torch.int32), w["gate_beta"], w["gate_norms"],
            w["down_packed"].view(torch.int32), w["down_beta"], w["down_norms"],
            w["final_norm"], w["head_packed"].view(torch.int32), w["head_beta"], w["head_norms"],
            L, d, inner, V, eps)
    options = dict(DP4A=not interp, BW_D=triton.next_power_of_2(kw_d), BW_I=triton.next_power_of_2(kw_i),
                   FULL_D=kw_d == triton.next_power_of_2(kw_d), FULL_I=kw_i == triton.next_power_of_2(kw_i),
                   KW_D=kw_d, KW_I=kw_i, BN_D=BN_D if not interp else 16, BN_DOWN=BN_DOWN if not interp else 8,
                   EB=64, TRACE=trace is not None, num_warps=NUM_WARPS if not interp else 1)
    _decode_token_kernel[(_programs(args, options, h0.device),)](*args, **options)
    return logits
