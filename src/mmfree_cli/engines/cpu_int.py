"""The CPU integer engine (`--engine cpu`): numba kernels bit-exact with `quant.intref`.

The arithmetic is docs/integer-spec.md, unit by unit, on int64 values in compiled loops (no
per-element Python) written so that LLVM vectorises them (the sigmoid table's lookups in a pass
of their own: `_lookup`); the ternary products are `cpu_ternary`'s packed kernels (AVX-512 VNNI,
AVX-VNNI, AVX2 or popcount: the fastest this CPU runs). A forward call is one compiled function
run by a team of threads kept for the model's life, one per core (`cpu_team`): each product is
split by weight rows over the team, the per-channel steps (recurrence, SiLU of the gate) by
channels, and the other element-wise steps between products (norms, quantisation) by rows, or by
the same channels when a call has fewer rows than threads (`_split`); between decode calls the
helpers wait in compiled code, off the GIL (`_decode_helper`). Rows of a batch are
the tokens of all sequences (row b·T + t), so a prefill runs each projection once as a
matrix-matrix product; only the recurrence itself walks the positions in order. State is an int32
numpy array [L, B, d] (Q11.20), as in the reference. Where a decode step's time goes, and what was
tried: docs/cpu-engine.md.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..quant import intspec
from ..quant.intspec import EPS_M, EPS_S, EPS_TERM_MAX, FRAC_G, FRAC_H, FRAC_X, INT32_MAX, INT32_MIN, ONE_G
from .base import Engine, State
from .cpu_team import Team, barrier, share
from .cpu_ternary import KERNELS, TILE, default_kernel, layout, matmul, padded

SIG = intspec.SIGMOID_TABLE.astype(np.int32)
KEEP_ROWS = 16  # calls of at most this many rows keep their buffers for the next call (see `forward`)
RSQ = intspec.RSQRT_TABLE.astype(np.int64)


@njit(cache=True, inline="always")
def _rsr(x, s):
    """rshift_round: round half up of x / 2^s (s ≥ 1), x << -s otherwise."""
    if s > 0:
        return (x + (np.int64(1) << (s - 1))) >> s
    return x << (-s)


@njit(cache=True)
def _bit_length(v):
    n = 0
    while v > 0:
        v >>= 1
        n += 1
    return n


@njit(cache=True, nogil=True)
def _reduce(team, a, b, add_a):
    """(Σ or max of the team's a, max of the team's b): each thread's pair, exchanged at a barrier.
    team = (tid, nthreads, sync, slots), slots int64 [3, nthreads, 8] (a cache line a thread): two
    buffers used in turn (a thread is at most one reduction ahead of the others, held by the
    barrier) and a count of reductions per thread. A team of 1 is a thread working alone on its
    own rows. (A barrier without a shared counter, each thread spinning on the others' counts, took
    250 ns a meeting against this one's 70-160 ns, measured.)"""
    tid, nthreads, sync, slots = team
    if nthreads == 1:
        return a, b
    k = slots[2, tid, 0] & 1
    slots[2, tid, 0] += 1
    slots[k, tid, 0], slots[k, tid, 1] = a, b
    barrier(sync, nthreads)
    total, top = slots[k, 0, 0], slots[k, 0, 1]
    for t in range(1, nthreads):
        total = total + slots[k, t, 0] if add_a else max(total, slots[k, t, 0])
        top = max(top, slots[k, t, 1])
    return total, top


@njit(cache=True, nogil=True)
def _exchange(team, values):
    """values[0] = Σ over the team of values[0], values[i] = max over the team of values[i] for
    i ≥ 1 (at most 8 values), at one barrier (see `_reduce`)."""
    tid, nthreads, sync, slots = team
    if nthreads == 1:
        return
    k = slots[2, tid, 0] & 1
    slots[2, tid, 0] += 1
    for i in range(values.shape[0]):
        slots[k, tid, i] = values[i]
    barrier(sync, nthreads)
    values[0] = 0
    for t in range(nthreads):
        values[0] += slots[k, t, 0]
        for i in range(1, values.shape[0]):
            values[i] = max(values[i], slots[k, t, i])


@njit(cache=True)
def _shift16(top):
    """normalize16's shift for a vector whose largest magnitude is top."""
    return _bit_length(top) - 15 if top > 0 else 0


@njit(cache=True, inline="always")
def _sat16(v, k):
    return min(max(_rsr(v, k), -32768), 32767)


@njit(cache=True)
def _sat16_into(v, out, k):
    """out = sat16(rshift_round(v, k)), a loop for each sign of k: with the test inside, some
    callers' loops ran 10-20x slower (measured)."""
    if k > 0:
        half = np.int64(1) << (k - 1)
        for j in range(v.shape[0]):
            out[j] = min(max((v[j] + half) >> k, -32768), 32767)
    else:
        for j in range(v.shape[0]):
            out[j] = min(max(v[j] << -k, -32768), 32767)


# The element-wise steps below take their thread's channels as views (v[lo:hi]), never as index
# ranges: a loop from a start numba cannot prove non-negative wraps every index (as for v[-1]) and
# runs unvectorised, 10-20x slower (measured).


@njit(cache=True)
def _normalize16(v, out, team):
    """out = sat16(rshift_round(v, k)) on this thread's channels, k from the whole team's v;
    returns k (see intref.normalize16)."""
    top = np.int64(0)
    for j in range(v.shape[0]):
        top = max(top, abs(v[j]))
    k = _shift16(_reduce(team, 0, top, False)[1])
    _sat16_into(v, out, k)
    return k


@njit(cache=True)
def _normalize16_pair(v, out, w, out_w, team):
    """`_normalize16` of two vectors, exchanged at one barrier."""
    top_v, top_w = np.int64(0), np.int64(0)
    for j in range(v.shape[0]):
        top_v = max(top_v, abs(v[j]))
    for j in range(w.shape[0]):
        top_w = max(top_w, abs(w[j]))
    top_v, top_w = _reduce(team, top_v, top_w, False)
    kv, kw = _shift16(top_v), _shift16(top_w)
    _sat16_into(v, out, kv)
    _sat16_into(w, out_w, kw)
    return kv, kw


@njit(cache=True)
def _eps_term(z, p):
    b = max(_bit_length(z) - 31, 0)
    prod = np.int64(EPS_M) * (z >> b)
    shift = EPS_S - b + 2 * p
    if shift <= 0 and _bit_length(prod) - shift > 56:
        return np.int64(EPS_TERM_MAX)
    return min(_rsr(prod, max(shift, -56)), np.int64(EPS_TERM_MAX))


@njit(cache=True)
def _rsqrt(s, rsq):
    """(r, e) with 1/√s ≈ r·2^-(23 + e/2) (see intref.rsqrt_fixed)."""
    if s <= 0:
        return np.int64(0), np.int64(0)
    e = ((_bit_length(s) - 15) >> 1) << 1
    t = s >> e if e >= 0 else s << (-e)
    i = min(max((t >> 7) - 128, 0), rsq.shape[0] - 2)
    return rsq[i] + _rsr((rsq[i + 1] - rsq[i]) * (t & 127), 7), np.int64(e)


@njit(cache=True)
def _extremes(w16, gain):
    """(max u, max -u) of this thread's u = w16·gain."""
    big, small = np.int64(0), np.int64(0)
    for j in range(w16.shape[0]):
        big = max(big, w16[j] * gain[j])
    for j in range(w16.shape[0]):
        small = max(small, -w16[j] * gain[j])
    return big, small


@njit(cache=True)
def _quantize_row(w16, gain, big, small, r, e, cm, cs, q, u, u16):
    """u = w16·gain → its int8 activations q (zero-padded) and the output multiplier (M_m, M_e),
    given the team's max u (big) and max -u (small). normalize16(u) is monotonic, so the largest
    |normalize16(u)| comes from u's largest and smallest values: they give both normalize16's shift
    and the quantisation's scale."""
    n = w16.shape[0]
    for j in range(n):
        u[j] = w16[j] * gain[j]
    k = _shift16(max(big, small))
    a = max(_sat16(big, k), -_sat16(-small, k))
    recip = ((np.int64(127) << 32) + a - 1) // a if a > 0 else np.int64(0)
    _sat16_into(u, u16, k)
    for j in range(n):
        mag = (abs(u16[j]) * recip + (np.int64(1) << 31)) >> 32
        q[j] = mag if u16[j] >= 0 else -mag
    p = _rsr(a * r, 8)
    mm = _rsr(cm * p, 24)
    me = min(max(cs + 23 + (e >> 1) - k - 32, 1), 62)
    return mm, me


@njit(cache=True)
def _prepare(w, proj, eps_z, eps_p, use_eps, rsq, q, mm, me, part, team, scratch):
    """The int8 activations q [G, R, Kp] (padding left zero) and output multipliers mm, me [G, R]
    of the BitLinear input rows w [R, K] for the G projections stacked in proj = (weights, gains
    [G, K], scales [G, 2]). The norm is shared by the G projections; the gain and quantisation are
    per projection. part = (rows lo, hi, channels lo, hi) of this thread (`_split`); scratch: this
    thread's buffers (`_scratch`)."""
    _, gains, scales = proj
    r_lo, r_hi, lo, hi = part
    w16, u, u16 = scratch[0][0, lo:hi], scratch[0][1, lo:hi], scratch[0][2, lo:hi]
    # the norm's Σw16² and the G projections' extremes depend on w16 alone: one exchange for all
    sums = scratch[3][:1 + 2 * gains.shape[0]]
    for r in range(r_lo, r_hi):
        kw = _normalize16(w[r, lo:hi], w16, team)
        sums[0] = 0
        for j in range(w16.shape[0]):
            sums[0] += w16[j] * w16[j]
        for g in range(gains.shape[0]):
            sums[1 + 2 * g], sums[2 + 2 * g] = _extremes(w16, gains[g, lo:hi])
        _exchange(team, sums)
        total = sums[0] + (_eps_term(eps_z[r], eps_p[r] + kw) if use_eps else 0)
        rs, e = _rsqrt(total, rsq)  # 1/√Σw16² (+ eps), as intref's RMSNorm of a BitLinear input
        for g in range(gains.shape[0]):
            m, s = _quantize_row(w16, gains[g, lo:hi], sums[1 + 2 * g], sums[2 + 2 * g], rs, e, scales[g, 0],
                                 scales[g, 1], q[g, r, lo:hi], u, u16)
            if lo == 0:
                mm[g, r], me[g, r] = m, s


@njit(cache=True)
def _normed_input(x, gain, proj, rsq, q, mm, me, part, team, scratch):
    """The BitLinear input after a residual RMSNorm (apply_gain per row; no eps term)."""
    r_lo, r_hi, lo, hi = part
    w, zeros = scratch[1], scratch[2][0]
    g = gain[lo:hi]
    for r in range(r_lo, r_hi):
        wr = w[r, lo:hi]
        _normalize16(x[r, lo:hi], wr, team)
        for j in range(wr.shape[0]):
            wr[j] *= g[j]
    _prepare(w, proj, zeros, zeros, False, rsq, q, mm, me, part, team, scratch)


# The sigmoid table's interpolation in two passes: one fetches each element's entry and the step
# to the next (`_lookup`), then a loop without lookups (`_interp`) vectorises. LLVM's vectoriser
# gathers no table entries on this AMD EPYC, so `_lookup8` gathers by hand, eight elements at a
# time, each entry and its successor in one 8-byte load: a third of the scalar loop's time, measured
# (the sigmoid's lookups were a third of a decode's element-wise time at 2 threads). Constants are
# globals so they fold.
LIM_X, SH_X = (1 << (4 + FRAC_X)) - 1, FRAC_X - 6  # sigmoid of Q15.16 inputs
LIM_H, SH_H = (1 << (4 + FRAC_H)) - 1, FRAC_H - 6  # sigmoid of the state (Q11.20)
_I32, _I64, _V8 = ir.IntType(32), ir.IntType(64), ir.VectorType(ir.IntType(64), 8)


@intrinsic
def _lookup8(typingctx, y, j, lim, sh, sig, base, step):
    """`_lookup` of the contiguous int64 y[j:j+8] into base, step[j:j+8] (sig: contiguous int32,
    one entry past the largest index), with one vector gather of (sig[i], sig[i+1]) pairs."""
    def codegen(context, builder, signature, args):
        def data(k):
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        def splat(value):
            lane0 = builder.insert_element(ir.Constant(_V8, ir.Undefined), value, ir.Constant(_I32, 0))
            return builder.shuffle_vector(lane0, ir.Constant(_V8, ir.Undefined), ir.Constant(ir.VectorType(_I32, 8), [0] * 8))

        def vector_at(k):
            return builder.bitcast(builder.gep(data(k), [args[1]]), _V8.as_pointer())

        y8 = builder.load(vector_at(0), align=8)
        zero = ir.Constant(_V8, None)
        magnitude = builder.select(builder.icmp_signed("<", y8, zero), builder.sub(zero, y8), y8)
        limit = splat(args[2])
        index = builder.lshr(builder.select(builder.icmp_signed("<", magnitude, limit), magnitude, limit), splat(args[3]))
        address = builder.add(splat(builder.ptrtoint(data(4), _I64)), builder.shl(index, ir.Constant(_V8, [2] * 8)))
        pointers = builder.inttoptr(address, ir.VectorType(_I64.as_pointer(), 8))
        mask = ir.Constant(ir.VectorType(ir.IntType(1), 8), [1] * 8)
        gather = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [pointers.type, _I32, mask.type, _V8]),
                                                "llvm.masked.gather.v8i64.v8p0i64")
        pairs = builder.call(gather, [pointers, ir.Constant(_I32, 4), mask, ir.Constant(_V8, ir.Undefined)])
        entry = builder.ashr(builder.shl(pairs, ir.Constant(_V8, [32] * 8)), ir.Constant(_V8, [32] * 8))  # sig[i]
        successor = builder.ashr(pairs, ir.Constant(_V8, [32] * 8))  # sig[i + 1], little-endian
        builder.store(entry, vector_at(5), align=8)
        builder.store(builder.sub(successor, entry), vector_at(6), align=8)
        return context.get_dummy_value()
    if not all(a.layout == "C" for a in (y, sig, base, step)):
        return None  # a strided view would be read wrongly: refuse it at compile time
    return types.none(y, j, lim, sh, sig, base, step), codegen


@njit(cache=True)
def _lookup(y, lim, sh, sig, base, step):
    n = y.shape[0] // 8 * 8
    for j in range(0, n, 8):
        _lookup8(y, j, lim, sh, sig, base, step)
    for j in range(n, y.shape[0]):
        i = min(abs(y[j]), lim) >> sh
        base[j] = sig[i]
        step[j] = sig[i + 1] - sig[i]


@njit(inline="always")
def _interp(v, lim, sh, base, step):
    """intref.sigmoid_q of v (a Q1.20 result) from its table entry and step (see `_lookup`)."""
    s = base + ((step * (min(abs(v), lim) & ((np.int64(1) << sh) - 1)) + (np.int64(1) << (sh - 1))) >> sh)
    return s if v >= 0 else ONE_G - s


@njit(cache=True)
def _recurrence(y_ifg, h, n_seq, lb, sig, silu_h, lo, hi):
    """The gates and h_t = f·h_(t-1) + i over the positions in order, for channels lo..hi-1; h [B, d]
    updated in place, silu(h_t) written to silu_h [B·T, d]."""
    d, n = h.shape[1], hi - lo
    steps = y_ifg.shape[0] // n_seq
    bf, sf, bi, si = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    lbs = lb[lo:hi]
    for b in range(n_seq):
        hb = h[b, lo:hi]
        for t in range(steps):
            r = b * steps + t
            yi, yf, out = y_ifg[r, lo:hi], y_ifg[r, d + lo:d + hi], silu_h[r, lo:hi]
            _lookup(yf, LIM_X, SH_X, sig, bf, sf)
            _lookup(yi, LIM_X, SH_X, sig, bi, si)
            for j in range(n):
                s = _interp(yf[j], LIM_X, SH_X, bf[j], sf[j])
                f = s + ((lbs[j] * (ONE_G - s) + (np.int64(1) << (FRAC_G - 1))) >> FRAC_G)
                v = yi[j]
                silu_i = (v * _interp(v, LIM_X, SH_X, bi[j], si[j]) + (np.int64(1) << (FRAC_G - 1))) >> FRAC_G
                i = (silu_i * (ONE_G - f) + (np.int64(1) << (FRAC_X + FRAC_G - FRAC_H - 1))) >> (FRAC_X + FRAC_G - FRAC_H)
                hb[j] = min(max(((f * hb[j] + (np.int64(1) << (FRAC_G - 1))) >> FRAC_G) + i, INT32_MIN), INT32_MAX)
            _lookup(hb, LIM_H, SH_H, sig, bf, sf)
            for j in range(n):
                v = hb[j]
                out[j] = (v * _interp(v, LIM_H, SH_H, bf[j], sf[j]) + (np.int64(1) << (FRAC_G - 1))) >> FRAC_G


@njit(cache=True)
def _silu_rows(y, out, sig, lo, hi):
    """out[:, j] = silu(y[:, j]) for channels lo..hi-1 (y in Q15.16)."""
    base, step = np.empty(hi - lo, np.int64), np.empty(hi - lo, np.int64)
    for r in range(y.shape[0]):
        yr, orow = y[r, lo:hi], out[r, lo:hi]
        _lookup(yr, LIM_X, SH_X, sig, base, step)
        for j in range(hi - lo):
            v = yr[j]
            orow[j] = (v * _interp(v, LIM_X, SH_X, base[j], step[j]) + (np.int64(1) << (FRAC_G - 1))) >> FRAC_G


@njit(cache=True)
def _o_input(y_ifg, silu_h, g_gain, g_shift, po, rsq, q, mm, me, part, team, scratch):
    """intref.token_mixer after the recurrence: o_proj's input rms_norm(g)·silu(h), with its eps
    reference."""
    r_lo, r_hi, lo, hi = part
    d = silu_h.shape[1]
    o_in, eps_z, eps_p = scratch[1], scratch[2][1], scratch[2][2]
    g16, s16, prod = scratch[0][3, lo:hi], scratch[0][4, lo:hi], scratch[0][5, lo:hi]
    gain = g_gain[lo:hi]
    for r in range(r_lo, r_hi):
        _, ks = _normalize16_pair(y_ifg[r, 2 * d + lo:2 * d + hi], g16, silu_h[r, lo:hi], s16, team)
        z, top = np.int64(0), np.int64(0)
        for j in range(g16.shape[0]):
            z += g16[j] * g16[j]
        for j in range(g16.shape[0]):
            prod[j] = g16[j] * s16[j]
        for j in range(g16.shape[0]):
            top = max(top, abs(prod[j]))
        z, top = _reduce(team, z, top, True)
        kp = _shift16(top)
        o_row = o_in[r, lo:hi]
        _sat16_into(prod, o_row, kp)
        for j in range(o_row.shape[0]):
            o_row[j] *= gain[j]
        eps_z[r] = z
        eps_p[r] = ks + kp - FRAC_H - g_shift
    _prepare(o_in, po, eps_z, eps_p, True, rsq, q, mm, me, part, team, scratch)


@njit(cache=True)
def _down_input(y, silu_gate, pdown, rsq, q, mm, me, part, team, scratch):
    """intref.channel_mixer between its products: down_proj's input silu(gate)·up, given silu(gate)."""
    r_lo, r_hi, lo, hi = part
    inner = y.shape[1] // 2
    p, eps_z, eps_p = scratch[1], scratch[2][1], scratch[2][2]
    a16, b16 = scratch[0][3, lo:hi], scratch[0][4, lo:hi]
    for r in range(r_lo, r_hi):
        ka, kb = _normalize16_pair(silu_gate[r, lo:hi], a16, y[r, inner + lo:inner + hi], b16, team)
        p_row = p[r, lo:hi]
        for j in range(p_row.shape[0]):
            p_row[j] = a16[j] * b16[j]
        eps_z[r], eps_p[r] = inner, ka + kb - 2 * FRAC_X
    _prepare(p, pdown, eps_z, eps_p, True, rsq, q, mm, me, part, team, scratch)


@njit(cache=True)
def _add_sat(x, y, part):
    r_lo, r_hi, lo, hi = part
    for r in range(r_lo, r_hi):
        xr, yr = x[r, lo:hi], y[r, lo:hi]
        for j in range(xr.shape[0]):
            xr[j] = min(max(xr[j] + yr[j], INT32_MIN), INT32_MAX)


@njit(cache=True)
def _scratch(n_rows, width):
    """A thread's buffers for the element-wise steps, allocated once a forward call (allocating
    them in each step cost more than the step's arithmetic, measured): six vectors, one row-sized
    input per row, three per-row values (zeros, eps reference's z and p) and 8 values exchanged."""
    eps = np.empty((3, n_rows), dtype=np.int64)
    eps[0] = 0
    return (np.empty((6, width), dtype=np.int64), np.empty((n_rows, width), dtype=np.int64), eps,
            np.empty(8, dtype=np.int64))


@njit(cache=True)
def _split(n_rows, width, tid, nthreads, sync, slots):
    """This thread's part of an element-wise step on n_rows rows of `width` channels and the team
    its norms' sums and maxima are exchanged with: whole rows each where there are rows enough
    (a prefill; a team of one), else every row by channels, split as the recurrence and SiLU steps
    split them, so each thread reads only what it wrote itself."""
    if n_rows >= nthreads:
        r_lo, r_hi = share(n_rows, tid, nthreads)
        return (r_lo, r_hi, 0, width), (tid, 1, sync, slots)
    lo, hi = share(width, tid, nthreads)
    return (0, n_rows, lo, hi), (tid, nthreads, sync, slots)


@njit(cache=True)
def _product(tid, nthreads, sync, proj, q, mm, me, out, kernel):
    """out = the requantised products of proj's weights and q, each thread its share of the rows;
    the barriers make q ready before and out complete after."""
    barrier(sync, nthreads)
    lo, hi = share(proj[0].shape[0] // TILE, tid, nthreads)  # whole tiles of rows
    matmul(kernel, proj[0], q, mm, me, out, lo * TILE, hi * TILE)
    barrier(sync, nthreads)


@njit(cache=True)
def _layer(l, layers):
    attn_gain, lb, g_gain, g_shift, pifg, po, mlp_gain, pgate, pdown = layers
    return (attn_gain[l], lb[l], g_gain[l], g_shift[l], (pifg[0][l], pifg[1][l], pifg[2][l]),
            (po[0][l], po[1][l], po[2][l]), mlp_gain[l], (pgate[0][l], pgate[1][l], pgate[2][l]),
            (pdown[0][l], pdown[1][l], pdown[2][l]))


@njit(cache=True, nogil=True)
def forward_team(tid, nthreads, sync, x, state, n_seq, layers, final_gain, head, work, sig, rsq, kernel):
    """The whole model on embedding rows x [B·T, d] (row b·T + t, int64, overwritten) → work's
    logits [B·T, V]; state int32 [L, B, d] updated in place. Run by every thread of a `cpu_team`:
    the products are split by weight rows, the per-channel steps (recurrence, SiLU of the gate) by
    channels, and the other element-wise steps (norms, quantisation, residual adds) by rows or,
    for fewer rows than threads (a decode), by the same channels (`_split`).
    work = (q_d3, q_d, q_inner, mm, me, y_ifg, y_d, y_inner, h, silu_h, silu_gate, slots, logits)."""
    q_d3, q_d, q_inner, mm, me, y_ifg, y_d, y_inner, h, silu_h, silu_gate, slots, logits = work
    n_rows = x.shape[0]
    lo, hi = share(h.shape[1], tid, nthreads)
    lo_inner, hi_inner = share(silu_gate.shape[1], tid, nthreads)
    part, team = _split(n_rows, h.shape[1], tid, nthreads, sync, slots)
    part_inner, team_inner = _split(n_rows, silu_gate.shape[1], tid, nthreads, sync, slots)
    by_rows = n_rows >= nthreads  # then a step reads rows other threads wrote: a barrier first
    scratch = _scratch(n_rows, max(h.shape[1], silu_gate.shape[1]))
    for l in range(state.shape[0]):
        ag, lb, gg, gs, pifg, po, mg, pgate, pdown = _layer(l, layers)
        _normed_input(x, ag, pifg, rsq, q_d3, mm, me, part, team, scratch)
        _product(tid, nthreads, sync, pifg, q_d3, mm, me, y_ifg, kernel)  # i, f, g in one pass
        h[:, lo:hi] = state[l, :, lo:hi]
        _recurrence(y_ifg, h, n_seq, lb, sig, silu_h, lo, hi)
        state[l, :, lo:hi] = h[:, lo:hi]
        if by_rows:
            barrier(sync, nthreads)
        _o_input(y_ifg, silu_h, gg, gs, po, rsq, q_d, mm, me, part, team, scratch)
        _product(tid, nthreads, sync, po, q_d, mm, me, y_d, kernel)
        _add_sat(x, y_d, part)
        _normed_input(x, mg, pgate, rsq, q_d, mm, me, part, team, scratch)
        _product(tid, nthreads, sync, pgate, q_d, mm, me, y_inner, kernel)
        _silu_rows(y_inner, silu_gate, sig, lo_inner, hi_inner)
        if by_rows:
            barrier(sync, nthreads)
        _down_input(y_inner, silu_gate, pdown, rsq, q_inner, mm, me, part_inner, team_inner, scratch)
        _product(tid, nthreads, sync, pdown, q_inner, mm, me, y_d, kernel)
        _add_sat(x, y_d, part)
    _normed_input(x, final_gain, head, rsq, q_d, mm, me, part, team, scratch)
    _product(tid, nthreads, sync, head, q_d, mm, me, logits, kernel)


@njit(cache=True, nogil=True)
def _decode_helper(tid, nthreads, sync, go, command, x, state, n_seq, layers, final_gain, head, work, sig, rsq,
                   kernel):
    """A helper's loop over the decode calls on one set of buffers (`Team.run_kept`): it stays in
    compiled code, off the GIL, between calls."""
    while True:
        barrier(go, nthreads)
        if command[0] == 0:
            return
        forward_team(tid, nthreads, sync, x, state, n_seq, layers, final_gain, head, work, sig, rsq, kernel)


@njit(cache=True, nogil=True)
def _decode_lead(nthreads, sync, go, command, x, state, n_seq, layers, final_gain, head, work, sig, rsq, kernel):
    """Thread 0's side of one such call: start the helpers, run its share. forward_team ends at a
    barrier after the last product, so the helpers are done with the buffers when it returns."""
    command[0] = 1
    barrier(go, nthreads)
    forward_team(0, nthreads, sync, x, state, n_seq, layers, final_gain, head, work, sig, rsq, kernel)


class CompiledModel:
    """The integer model in the kernel's memory layout (each layer's constants stacked over the
    layers, at the spec's widths: int16 gains, int32 lower bounds and sigmoid table, since a token
    reads them all from DRAM and int64 copies cost ~0.1 ms a token), and a forward over rows of tokens."""

    def __init__(self, model: dict[str, np.ndarray], kernel: str | None = None, threads: int | None = None):
        from ..quant.intref import head_view, layer_view, num_layers
        self.kernel = kernel or default_kernel()
        self.embed = model["embed"]
        self.final_gain = model["final_gain"].astype(np.int16)
        self.head = self._proj(head_view(model))
        self.vocab = head_view(model)["codes"].shape[0]  # the head's rows are padded to whole tiles
        views = [layer_view(model, l) for l in range(num_layers(model))]

        def stack(name, dtype=np.int16):
            return np.stack([v[name].astype(dtype) for v in views])

        def stack_proj(*names):
            projs = [self._proj(*(v[n] for n in names)) for v in views]
            return tuple(np.stack(parts) for parts in zip(*projs))

        self.layers = (stack("attn_gain"), stack("lower_bound", np.int32), stack("g_gain"),
                       stack("g_gain_shift", np.int64)[:, 0],
                       stack_proj("i", "f", "g"), stack_proj("o"), stack("mlp_gain"),
                       stack_proj("gate"), stack_proj("down"))
        # a thread per core, but not for small models: splitting a product of a few KB costs more in
        # barriers than it saves (the tiny recipe's model decodes ~10x faster on one thread)
        self.threads = threads or max(1, min(len(os.sched_getaffinity(0)), self.weight_bytes() >> 20))
        self.team = Team(self.threads)
        self._lock, self._kept = threading.Lock(), None  # a decode's buffers, kept (see `forward`)

    def _proj(self, *projs: dict) -> tuple:
        """Projections of one input, stacked for one pass: (weights, gains [G, K], scales [G, 2])."""
        return (np.concatenate([layout(p["codes"], self.kernel) for p in projs]),
                np.stack([p["gain"].astype(np.int16) for p in projs]),
                np.stack([p["scale"].astype(np.int64) for p in projs]))

    def weight_bytes(self) -> int:
        """Bytes of packed ternary weights one token reads (every projection once)."""
        return self.head[0].nbytes + sum(self.layers[i][0].nbytes for i in (4, 5, 7, 8))

    def work(self, n_seq: int, n_rows: int) -> tuple:
        """The team's buffers for n_seq sequences of n_rows rows in all (see `forward_team`)."""
        d, inner, vocab = self.embed.shape[1], self.layers[8][1].shape[2], self.vocab
        kd, ki = padded(d), padded(inner)
        zeros = np.zeros
        return (zeros((3, n_rows, kd), np.int8), zeros((1, n_rows, kd), np.int8), zeros((1, n_rows, ki), np.int8),
                zeros((3, n_rows), np.int64), zeros((3, n_rows), np.int64), zeros((n_rows, 3 * d), np.int64),
                zeros((n_rows, d), np.int64), zeros((n_rows, 2 * inner), np.int64), zeros((n_seq, d), np.int64),
                zeros((n_rows, d), np.int64), zeros((n_rows, inner), np.int64), zeros((3, self.threads, 8), np.int64),
                zeros((n_rows, vocab), np.int64))

    def forward(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens [B, T], state int32 [L, B, d] → (logits int32 [B, T, V], new state). Calls of at
        most KEEP_ROWS rows (decode steps) keep their buffers, inputs included, for the next call of
        the same shape, and the team's helpers wait in compiled code for it (`Team.run_kept`); a
        prefill's buffers are dropped after."""
        n_seq, steps = tokens.shape
        ids = tokens.reshape(-1)
        args = (self.layers, self.final_gain, self.head)
        with self._lock:
            if ids.shape[0] > KEEP_ROWS:
                x, new, work = self.embed[ids].astype(np.int64), state.copy(), self.work(n_seq, ids.shape[0])
                self.team.run(forward_team, x, new, n_seq, *args, work, SIG, RSQ, KERNELS.index(self.kernel))
                return work[-1].astype(np.int32).reshape(n_seq, steps, -1), new
            shape = (n_seq, ids.shape[0], state.shape, state.dtype)
            if self._kept is None or self._kept[0] != shape:
                self._kept = (shape, np.empty((ids.shape[0], self.embed.shape[1]), np.int64),
                              np.empty(state.shape, state.dtype), self.work(n_seq, ids.shape[0]))
            kept = self._kept
            _, x, new, work = kept
            x[...], new[...] = self.embed[ids], state
            self.team.run_kept(kept, _decode_helper, _decode_lead, x, new, n_seq, *args, work, SIG, RSQ,
                               KERNELS.index(self.kernel))
            return work[-1].astype(np.int32).reshape(n_seq, steps, -1), new.copy()


class CpuIntEngine(Engine):
    """Integer-only inference on the CPU: `mmfree export --target cpu` output, or a run directory
    (converted to the integer model at load)."""

    name = "cpu"

    def __init__(self, config, tokenizer, model: dict[str, np.ndarray], kernel: str | None = None,
                 threads: int | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.compiled = CompiledModel(model, kernel, threads)
        self._warm_up()

    def _warm_up(self) -> None:
        """Run one token now, so numba's one-off compile (a minute or more the first time; cached on
        disk after) happens at load, with a line saying so, and never counts as prefill time."""
        import sys
        import threading
        import time
        started, said = time.perf_counter(), []

        def say() -> None:
            said.append(True)
            print("compiling the CPU kernels (the first time only; cached afterwards)…", file=sys.stderr, flush=True)
        note = threading.Timer(1.0, say)
        note.start()
        try:
            self.compiled.forward(np.zeros((1, 1), dtype=np.int64), self.new_state(1))
        finally:
            note.cancel()
        if said:
            print(f"compiled in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, kernel: str | None = None,
             **_options: Any) -> CpuIntEngine:
        """A cpu export or any model directory. threads: cores to use (default all);
        kernel: vnni | avxvnni | avx2 | popcount (default: the fastest this CPU runs)."""
        from ..data.tokenizer import load_tokenizer
        from ..formats.intmodel import read_int_model
        from ..model import HGRNBitConfig
        path = Path(path)
        config = HGRNBitConfig.load(path)
        model = read_int_model(path)
        tokenizer = load_tokenizer(path, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
        return cls(config, tokenizer, model, kernel, threads)

    def new_state(self, batch_size: int) -> State:
        c = self.config
        return np.zeros((c.num_hidden_layers, batch_size, c.hidden_size), dtype=np.int32)

    def prefill_int(self, tokens: torch.Tensor, state: State) -> tuple[np.ndarray, State]:
        """Like `prefill` but the logits stay integers (Q15.16), for bit-exact comparisons."""
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        return self.compiled.forward(ids, state)

    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.prefill_int(tokens, state)
        return torch.from_numpy(intspec.logits_to_float(logits)), state

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.prefill(torch.as_tensor(tokens).reshape(-1, 1), state)
        return logits[:, 0], state

    def state_batch_select(self, state: State, index: list[int]) -> State:
        return state[:, list(index)].copy()

    def state_concat(self, states: list[State]) -> State:
        return np.concatenate(states, axis=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": f"cpu (integer-only, numba, {self.compiled.kernel} kernel, "
                f"{self.compiled.threads} thread{'s' if self.compiled.threads > 1 else ''})",
                "weight_bytes_per_token": self.compiled.weight_bytes()}
