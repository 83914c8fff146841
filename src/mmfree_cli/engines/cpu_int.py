"""The CPU integer engine (`--engine cpu`): numba kernels bit-exact with `quant.intref`.

The arithmetic is docs/integer-spec.md, unit by unit, on int64 values in compiled loops (no
per-element Python) written so that LLVM vectorises them (the sigmoid table's lookups in a pass
of their own: `_lookup`); the ternary products are `cpu_ternary`'s packed kernels (AVX-512 VNNI,
AVX-VNNI, AVX2 or popcount: the fastest this CPU runs). A forward call is one compiled function
run by a team of threads kept for the model's life, one per core (`cpu_team`): each product is
split by weight rows over the team, the per-channel steps (recurrence, SiLU of the gate) by
channels, and the other element-wise steps between products run on thread 0. Rows of a batch are
the tokens of all sequences (row b·T + t), so a prefill runs each projection once as a
matrix-matrix product; only the recurrence itself walks the positions in order. State is an int32
numpy array [L, B, d] (Q11.20), as in the reference.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit

from ..quant import intspec
from ..quant.intspec import EPS_M, EPS_S, EPS_TERM_MAX, FRAC_G, FRAC_H, FRAC_X, INT32_MAX, INT32_MIN, ONE_G
from .base import Engine, State
from .cpu_team import Team, barrier, share
from .cpu_ternary import KERNELS, TILE, default_kernel, layout, matmul, padded

SIG = intspec.SIGMOID_TABLE.astype(np.int32)
KEEP_ROWS = 16  # calls of at most this many rows keep their buffers for the next call (see `forward`)
RSQ = intspec.RSQRT_TABLE.astype(np.int64)


@njit(cache=True)
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


@njit(cache=True)
def _normalize16(v, out):
    """out = sat16(rshift_round(v, k)); returns k (see intref.normalize16)."""
    top = np.int64(0)
    for j in range(v.shape[0]):
        top = max(top, abs(v[j]))
    k = _bit_length(top) - 15 if top > 0 else 0
    for j in range(v.shape[0]):
        out[j] = min(max(_rsr(v[j], k), -32768), 32767)
    return k


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
def _row_rsqrt(w, eps_z, eps_p, use_eps, rsq, w16):
    """The RMSNorm of one BitLinear input row: w16 = normalize16(w) and (r, e) ≈ 1/√Σw16² (+ eps)."""
    kw = _normalize16(w, w16)
    total = np.int64(0)
    for j in range(w16.shape[0]):
        total += w16[j] * w16[j]
    if use_eps:
        total += _eps_term(eps_z, eps_p + kw)
    return _rsqrt(total, rsq)


@njit(cache=True)
def _quantize_row(w16, gain, r, e, cm, cs, q, u, u16):
    """u = w16·gain → its int8 activations q (zero-padded) and the output multiplier (M_m, M_e)."""
    for j in range(w16.shape[0]):
        u[j] = w16[j] * gain[j]
    k = _normalize16(u, u16)
    a = np.int64(0)
    for j in range(u16.shape[0]):
        a = max(a, abs(u16[j]))
    recip = ((np.int64(127) << 32) + a - 1) // a if a > 0 else np.int64(0)
    for j in range(u16.shape[0]):
        mag = (abs(u16[j]) * recip + (np.int64(1) << 31)) >> 32
        q[j] = mag if u16[j] >= 0 else -mag
    p = _rsr(a * r, 8)
    mm = _rsr(cm * p, 24)
    me = min(max(cs + 23 + (e >> 1) - k - 32, 1), 62)
    return mm, me


@njit(cache=True)
def _prepare(w, proj, eps_z, eps_p, use_eps, rsq, q, mm, me):
    """The int8 activations q [G, R, Kp] (padding left zero) and output multipliers mm, me [G, R]
    of the BitLinear input rows w [R, K] for the G projections stacked in proj = (weights, gains
    [G, K], scales [G, 2]). The norm is shared by the G projections; the gain and quantisation are
    per projection."""
    _, gains, scales = proj
    k = w.shape[1]
    w16 = np.empty(k, dtype=np.int64)
    u = np.empty(k, dtype=np.int64)
    u16 = np.empty(k, dtype=np.int64)
    for r in range(w.shape[0]):
        rs, e = _row_rsqrt(w[r], eps_z[r], eps_p[r], use_eps, rsq, w16)
        for g in range(gains.shape[0]):
            mm[g, r], me[g, r] = _quantize_row(w16, gains[g], rs, e, scales[g, 0], scales[g, 1],
                                               q[g, r], u, u16)


@njit(cache=True)
def _normed_input(x, gain, proj, rsq, q, mm, me):
    """The BitLinear input after a residual RMSNorm (apply_gain per row; no eps term)."""
    w = np.empty_like(x)
    for r in range(x.shape[0]):
        _normalize16(x[r], w[r])
        for j in range(x.shape[1]):
            w[r, j] *= gain[j]
    zeros = np.zeros(x.shape[0], dtype=np.int64)
    _prepare(w, proj, zeros, zeros, False, rsq, q, mm, me)


# The sigmoid table's interpolation, split for LLVM's vectoriser (it gathers no table entries on
# this AMD EPYC): a scalar pass fetches each element's entry and step to the next (`_lookup`), then
# a loop without lookups (`_interp`) vectorises. Constants are globals so they fold.
LIM_X, SH_X = (1 << (4 + FRAC_X)) - 1, FRAC_X - 6  # sigmoid of Q15.16 inputs
LIM_H, SH_H = (1 << (4 + FRAC_H)) - 1, FRAC_H - 6  # sigmoid of the state (Q11.20)


@njit(cache=True)
def _lookup(y, lim, sh, sig, base, step):
    for j in range(y.shape[0]):
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
def _o_input(y_ifg, silu_h, g_gain, g_shift, po, rsq, q, mm, me):
    """intref.token_mixer after the recurrence: o_proj's input rms_norm(g)·silu(h), with its eps
    reference."""
    n_rows, d = silu_h.shape
    o_in = np.empty((n_rows, d), dtype=np.int64)
    eps_z = np.empty(n_rows, dtype=np.int64)
    eps_p = np.empty(n_rows, dtype=np.int64)
    g16 = np.empty(d, dtype=np.int64)
    s16 = np.empty(d, dtype=np.int64)
    prod = np.empty(d, dtype=np.int64)
    for r in range(n_rows):
        _normalize16(y_ifg[r, 2 * d:], g16)
        ks = _normalize16(silu_h[r], s16)
        z = np.int64(0)
        for j in range(d):
            z += g16[j] * g16[j]
            prod[j] = g16[j] * s16[j]
        kp = _normalize16(prod, o_in[r])
        for j in range(d):
            o_in[r, j] *= g_gain[j]
        eps_z[r] = z
        eps_p[r] = ks + kp - FRAC_H - g_shift
    _prepare(o_in, po, eps_z, eps_p, True, rsq, q, mm, me)


@njit(cache=True)
def _down_input(y, silu_gate, pdown, rsq, q, mm, me):
    """intref.channel_mixer between its products: down_proj's input silu(gate)·up, given silu(gate)."""
    n_rows, inner = y.shape[0], y.shape[1] // 2
    p = np.empty((n_rows, inner), dtype=np.int64)
    eps_z = np.full(n_rows, inner, dtype=np.int64)
    eps_p = np.empty(n_rows, dtype=np.int64)
    a16 = np.empty(inner, dtype=np.int64)
    b16 = np.empty(inner, dtype=np.int64)
    for r in range(n_rows):
        ka = _normalize16(silu_gate[r], a16)
        kb = _normalize16(y[r, inner:], b16)
        for j in range(inner):
            p[r, j] = a16[j] * b16[j]
        eps_p[r] = ka + kb - 2 * FRAC_X
    _prepare(p, pdown, eps_z, eps_p, True, rsq, q, mm, me)


@njit(cache=True)
def _add_sat(x, y):
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[r, j] = min(max(x[r, j] + y[r, j], INT32_MIN), INT32_MAX)


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
    the products and the per-channel steps (recurrence, SiLU of the gate) are split over the team,
    thread 0 does the rest (norms, quantisation, residual adds).
    work = (q_d3, q_d, q_inner, mm, me, y_ifg, y_d, y_inner, h, silu_h, silu_gate, logits)."""
    q_d3, q_d, q_inner, mm, me, y_ifg, y_d, y_inner, h, silu_h, silu_gate, logits = work
    lo, hi = share(h.shape[1], tid, nthreads)
    lo_inner, hi_inner = share(silu_gate.shape[1], tid, nthreads)
    for l in range(state.shape[0]):
        ag, lb, gg, gs, pifg, po, mg, pgate, pdown = _layer(l, layers)
        if tid == 0:
            _normed_input(x, ag, pifg, rsq, q_d3, mm, me)
        _product(tid, nthreads, sync, pifg, q_d3, mm, me, y_ifg, kernel)  # i, f, g in one pass
        h[:, lo:hi] = state[l, :, lo:hi]
        _recurrence(y_ifg, h, n_seq, lb, sig, silu_h, lo, hi)
        state[l, :, lo:hi] = h[:, lo:hi]
        barrier(sync, nthreads)
        if tid == 0:
            _o_input(y_ifg, silu_h, gg, gs, po, rsq, q_d, mm, me)
        _product(tid, nthreads, sync, po, q_d, mm, me, y_d, kernel)
        if tid == 0:
            _add_sat(x, y_d)
            _normed_input(x, mg, pgate, rsq, q_d, mm, me)
        _product(tid, nthreads, sync, pgate, q_d, mm, me, y_inner, kernel)
        _silu_rows(y_inner, silu_gate, sig, lo_inner, hi_inner)
        barrier(sync, nthreads)
        if tid == 0:
            _down_input(y_inner, silu_gate, pdown, rsq, q_inner, mm, me)
        _product(tid, nthreads, sync, pdown, q_inner, mm, me, y_d, kernel)
        if tid == 0:
            _add_sat(x, y_d)
    if tid == 0:
        _normed_input(x, final_gain, head, rsq, q_d, mm, me)
    _product(tid, nthreads, sync, head, q_d, mm, me, logits, kernel)


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
        self._lock, self._work = threading.Lock(), (None, None)  # the last call's buffers, kept

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
                zeros((n_rows, d), np.int64), zeros((n_rows, inner), np.int64), zeros((n_rows, vocab), np.int64))

    def forward(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens [B, T], state int32 [L, B, d] → (logits int32 [B, T, V], new state)."""
        n_seq, steps = tokens.shape
        x = self.embed[tokens.reshape(-1)].astype(np.int64)  # rows b·T + t
        new = state.copy()
        with self._lock:  # decode steps (a few rows) reuse their buffers; a prefill's are dropped after
            key, work = self._work
            if key != (n_seq, x.shape[0]):
                work = self.work(n_seq, x.shape[0])
                if x.shape[0] <= KEEP_ROWS:
                    self._work = ((n_seq, x.shape[0]), work)
            self.team.run(forward_team, x, new, n_seq, self.layers, self.final_gain, self.head, work, SIG, RSQ,
                          KERNELS.index(self.kernel))
            return work[-1].astype(np.int32).reshape(n_seq, steps, -1), new


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
