"""The CPU integer engine (`--engine cpu`): numba kernels bit-exact with `quant.intref`.

The arithmetic is docs/integer-spec.md, unit by unit, on int64 scalars in compiled loops (no
per-element Python); the ternary products are `cpu_ternary`'s packed kernels (AVX-512 VNNI where
the CPU has it, popcount otherwise), parallel over all cores. Rows of a batch are the tokens of
all sequences (row b·T + t), so a prefill runs each projection once as a matrix-matrix product;
only the recurrence itself walks the positions in order. State is an int32 numpy array
[L, B, d] (Q11.20), as in the reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from numba import njit

from ..quant import intspec
from .cpu_ternary import BLOCK, MATMULS, default_kernel, layout
from ..quant.intspec import (EPS_M, EPS_S, EPS_TERM_MAX, FRAC_G, FRAC_H, FRAC_X, INT32_MAX,
                             INT32_MIN, ONE_G)
from .base import Engine, State

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's OpenMP layer parks idle workers; on cores shared with other jobs, waking them cost
    # 20-40 ms per parallel region (measured), more than a whole decode step. Its own workqueue
    # layer does not pay that. Only takes effect if no parallel numba code has run yet.
    numba.config.THREADING_LAYER = "workqueue"

SIG = intspec.SIGMOID_TABLE.astype(np.int64)
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
def _prepare_row(w, gain, eps_z, eps_p, use_eps, cm, cs, rsq, q, w16, u, u16):
    """One BitLinear input row → its int8 activations q (zero-padded) and (M_m, M_e)."""
    kw = _normalize16(w, w16)
    total = np.int64(0)
    for j in range(w16.shape[0]):
        total += w16[j] * w16[j]
        u[j] = w16[j] * gain[j]
    if use_eps:
        total += _eps_term(eps_z, eps_p + kw)
    r, e = _rsqrt(total, rsq)
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
def bitlinear_rows(w, proj, eps_z, eps_p, use_eps, rsq, matmul):
    """intref.bitlinear_int on rows w [R, K] → y [R, G·N] (Q15.16) for G projections of the same
    input stacked in proj = (weights [G·N, ...], gains [G, K], scales [G, 2])."""
    weights, gains, scales = proj
    groups = gains.shape[0]
    n_rows, k = w.shape
    q = np.zeros((groups, n_rows, -(-k // BLOCK) * BLOCK), dtype=np.int8)
    mm = np.empty((groups, n_rows), dtype=np.int64)
    me = np.empty((groups, n_rows), dtype=np.int64)
    w16 = np.empty(k, dtype=np.int64)
    u = np.empty(k, dtype=np.int64)
    u16 = np.empty(k, dtype=np.int64)
    for g in range(groups):
        for r in range(n_rows):
            mm[g, r], me[g, r] = _prepare_row(w[r], gains[g], eps_z[r], eps_p[r], use_eps, scales[g, 0],
                                              scales[g, 1], rsq, q[g, r], w16, u, u16)
    acc = np.empty((n_rows, weights.shape[0]), dtype=np.int64)
    matmul(weights, q, acc)
    per_group = weights.shape[0] // groups
    for r in range(n_rows):
        for n in range(acc.shape[1]):
            g = n // per_group
            acc[r, n] = min(max(_rsr(acc[r, n] * mm[g, r], me[g, r]), INT32_MIN), INT32_MAX)
    return acc


@njit(cache=True)
def _sigmoid(y, frac, sig):
    z = min(abs(y), (np.int64(1) << (4 + frac)) - 1)
    sh = frac - 6
    i = z >> sh
    s = sig[i] + _rsr((sig[i + 1] - sig[i]) * (z & ((np.int64(1) << sh) - 1)), sh)
    return s if y >= 0 else ONE_G - s


@njit(cache=True)
def _silu(y, frac, sig):
    return _rsr(y * _sigmoid(y, frac, sig), FRAC_G)


@njit(cache=True)
def _gain_rows(x, gain):
    """apply_gain on every row → (w [R, K], k [R])."""
    w = np.empty_like(x)
    ks = np.empty(x.shape[0], dtype=np.int64)
    for r in range(x.shape[0]):
        ks[r] = _normalize16(x[r], w[r])
        for j in range(x.shape[1]):
            w[r, j] *= gain[j]
    return w, ks


@njit(cache=True)
def token_mixer_rows(x, h, n_seq, attn_gain, lb, g_gain, g_shift, pifg, po, sig, rsq, matmul):
    """intref.token_mixer on rows x [B·T, d] (row b·T + t); h [B, d] is updated in place."""
    n_rows, d = x.shape
    steps = n_rows // n_seq
    zeros = np.zeros(n_rows, dtype=np.int64)
    w, _ = _gain_rows(x, attn_gain)
    y_ifg = bitlinear_rows(w, pifg, zeros, zeros, False, rsq, matmul)  # i, f, g in one pass
    y_i, y_f, y_g = y_ifg[:, :d], y_ifg[:, d:2 * d], y_ifg[:, 2 * d:]
    silu_h = np.empty((n_rows, d), dtype=np.int64)
    for b in range(n_seq):
        for t in range(steps):
            r = b * steps + t
            for j in range(d):
                s = _sigmoid(y_f[r, j], FRAC_X, sig)
                f = s + _rsr(lb[j] * (ONE_G - s), FRAC_G)
                i = _rsr(_silu(y_i[r, j], FRAC_X, sig) * (ONE_G - f), FRAC_X + FRAC_G - FRAC_H)
                hv = min(max(_rsr(f * h[b, j], FRAC_G) + i, INT32_MIN), INT32_MAX)
                h[b, j] = hv
                silu_h[r, j] = _silu(hv, FRAC_H, sig)
    o_in = np.empty((n_rows, d), dtype=np.int64)
    eps_z = np.empty(n_rows, dtype=np.int64)
    eps_p = np.empty(n_rows, dtype=np.int64)
    g16 = np.empty(d, dtype=np.int64)
    s16 = np.empty(d, dtype=np.int64)
    prod = np.empty(d, dtype=np.int64)
    for r in range(n_rows):
        _normalize16(y_g[r], g16)
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
    return bitlinear_rows(o_in, po, eps_z, eps_p, True, rsq, matmul)


@njit(cache=True)
def channel_mixer_rows(x, mlp_gain, pgate, pdown, sig, rsq, matmul):
    """intref.channel_mixer on rows x [R, d]."""
    n_rows = x.shape[0]
    zeros = np.zeros(n_rows, dtype=np.int64)
    w, _ = _gain_rows(x, mlp_gain)
    y = bitlinear_rows(w, pgate, zeros, zeros, False, rsq, matmul)
    inner = y.shape[1] // 2
    p = np.empty((n_rows, inner), dtype=np.int64)
    eps_z = np.full(n_rows, inner, dtype=np.int64)
    eps_p = np.empty(n_rows, dtype=np.int64)
    gate = np.empty(inner, dtype=np.int64)
    a16 = np.empty(inner, dtype=np.int64)
    b16 = np.empty(inner, dtype=np.int64)
    for r in range(n_rows):
        for j in range(inner):
            gate[j] = _silu(y[r, j], FRAC_X, sig)
        ka = _normalize16(gate, a16)
        kb = _normalize16(y[r, inner:], b16)
        for j in range(inner):
            p[r, j] = a16[j] * b16[j]
        eps_p[r] = ka + kb - 2 * FRAC_X
    return bitlinear_rows(p, pdown, eps_z, eps_p, True, rsq, matmul)


class CompiledModel:
    """The integer model in the kernel's memory layout, and a forward over rows of tokens."""

    def __init__(self, model: dict[str, np.ndarray], kernel: str | None = None):
        from ..quant.intref import head_view, layer_view, num_layers
        self.kernel = kernel or default_kernel()
        self.matmul = MATMULS[self.kernel]
        self.embed = model["embed"]
        self.final_gain = model["final_gain"].astype(np.int64)
        self.head = self._proj(head_view(model))
        self.layers = []
        for l in range(num_layers(model)):
            v = layer_view(model, l)
            self.layers.append((v["attn_gain"].astype(np.int64), v["lower_bound"].astype(np.int64),
                                v["g_gain"].astype(np.int64), int(v["g_gain_shift"][0]),
                                self._proj(v["i"], v["f"], v["g"]), self._proj(v["o"]),
                                v["mlp_gain"].astype(np.int64), self._proj(v["gate"]), self._proj(v["down"])))

    def _proj(self, *projs: dict) -> tuple:
        """Projections of one input, stacked for one pass: (weights, gains [G, K], scales [G, 2])."""
        return (np.concatenate([layout(p["codes"], self.kernel) for p in projs]),
                np.stack([p["gain"].astype(np.int64) for p in projs]),
                np.stack([p["scale"].astype(np.int64) for p in projs]))

    def weight_bytes(self) -> int:
        """Bytes of packed ternary weights one token reads (every projection once)."""
        projs = [self.head] + [p for layer in self.layers for p in (*layer[4:6], *layer[7:])]
        return sum(p[0].nbytes for p in projs)

    def forward(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens [B, T], state int32 [L, B, d] → (logits int32 [B, T, V], new state)."""
        n_seq, steps = tokens.shape
        x = self.embed[tokens.reshape(-1)].astype(np.int64)  # rows b·T + t
        new = np.empty_like(state)
        mm = self.matmul
        for l, (ag, lb, gg, gs, pifg, po, mg, pgate, pdown) in enumerate(self.layers):
            h = state[l].astype(np.int64)
            o = token_mixer_rows(x, h, n_seq, ag, lb, gg, gs, pifg, po, SIG, RSQ, mm)
            new[l] = h
            x = np.clip(x + o, INT32_MIN, INT32_MAX)
            x = np.clip(x + channel_mixer_rows(x, mg, pgate, pdown, SIG, RSQ, mm), INT32_MIN, INT32_MAX)
        zeros = np.zeros(x.shape[0], dtype=np.int64)
        logits = bitlinear_rows(_gain_rows(x, self.final_gain)[0], self.head, zeros, zeros, False, RSQ, mm)
        return logits.astype(np.int32).reshape(n_seq, steps, -1), new


class CpuIntEngine(Engine):
    """Integer-only inference on the CPU: `mmfree export --target cpu` output, or a run directory
    (converted to the integer model at load)."""

    name = "cpu"

    def __init__(self, config, tokenizer, model: dict[str, np.ndarray], kernel: str | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.compiled = CompiledModel(model, kernel)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, kernel: str | None = None,
             **_options: Any) -> "CpuIntEngine":
        """A cpu export or any model directory. threads: cores to use (default all);
        kernel: vnni | popcount (default: vnni where the CPU has it)."""
        from ..data.tokenizer import load_tokenizer
        from ..export.cpu import read_int_model
        from ..model import HGRNBitConfig
        path = Path(path)
        config = HGRNBitConfig.load(path)
        model = read_int_model(path)
        if threads:
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        tokenizer = load_tokenizer(path, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
        return cls(config, tokenizer, model, kernel)

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
        return {**super().describe(), "device": f"cpu (integer-only, numba, {self.compiled.kernel} kernel)",
                "weight_bytes_per_token": self.compiled.weight_bytes()}
