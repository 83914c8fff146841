"""The numpy integer reference of HGRN-Bit inference: the definition of docs/integer-spec.md.

Every element-wise unit of the spec is one small function here, in integer numpy only (int64
arrays holding values whose widths the docstrings state), so the CPU engine and the RTL can
mirror it unit by unit and be held to it bit for bit. Functions work on the last axis and
broadcast over leading (batch) axes; per-vector scalars have the leading shape.

Conventions used throughout:
- `>>` is an arithmetic shift (floor); `rshift_round(x, s)` = floor((x + 2^(s-1)) / 2^s), i.e.
  round half up, for s ≥ 1, and x·2^-s (a left shift) for s ≤ 0.
- "sat32" clamps to [-2^31, 2^31 - 1], "sat16" to [-2^15, 2^15 - 1].
- The host fetches embedding rows (`embed`) and turns Q15.16 logits into floats; nothing else
  leaves the integer domain.
"""

from __future__ import annotations

import numpy as np

from .intspec import (
    EPS_M,
    EPS_S,
    EPS_TERM_MAX,
    FRAC_G,
    FRAC_H,
    FRAC_X,
    INT8_MAX,
    INT16_MAX,
    INT16_MIN,
    INT32_MAX,
    INT32_MIN,
    NORM_BITS,
    NORM_Z_BITS,
    ONE_G,
    QUANT_RECIP_SHIFT,
    RSQRT_BASE,
    RSQRT_TABLE,
    SCALE_SHIFT_MAX,
    SCALE_SHIFT_MIN,
    SIGMOID_RANGE_LOG2,
    SIGMOID_STEP_LOG2,
    SIGMOID_TABLE,
)

I64 = np.int64


def rshift_round(x, s):
    """Round half up of x / 2^s for s ≥ 1; x << -s for s ≤ 0. x, s: integer arrays (broadcast)."""
    x = np.asarray(x, dtype=I64)
    s = np.asarray(s, dtype=I64)
    sr = np.maximum(s, 1)
    right = (x + (I64(1) << (sr - 1))) >> sr
    left = x << np.maximum(-s, 0)
    return np.where(s > 0, right, left)


def sat32(x):
    return np.clip(x, INT32_MIN, INT32_MAX)


def bit_length(x):
    """Bits needed for a non-negative int64 (0 → 0): a priority encoder, by binary search."""
    v = np.asarray(x, dtype=I64).copy()
    n = np.zeros_like(v)
    for sh in (32, 16, 8, 4, 2, 1):
        big = v >= (I64(1) << sh)
        n += np.where(big, sh, 0)
        v = np.where(big, v >> sh, v)
    return n + (v > 0)


def normalize16(v):
    """Block normalisation: v [..., K] → (v16, k) with v ≈ v16·2^k and max |v16| in [2^14, 2^15).

    k = bit_length(max |v|) - 15 (0 for an all-zero vector; negative k is a left shift, exact);
    v16 = sat16(rshift_round(v, k)). Used where only the direction of a vector matters (the
    input of every BitLinear, whose RMSNorm removes the scale).
    """
    v = np.asarray(v, dtype=I64)
    top = np.abs(v).max(axis=-1)
    k = np.where(top > 0, bit_length(top) - NORM_BITS, 0)
    return np.clip(rshift_round(v, k[..., None]), INT16_MIN, INT16_MAX), k


def apply_gain(v, gain):
    """An RMSNorm gain on a scale-free vector: normalize16(v)·G → (|w| < 2^30, shift k of v)."""
    v16, k = normalize16(v)
    return v16 * np.asarray(gain, dtype=I64), k


def product16(a, b):
    """Element-wise product of two vectors, each block-normalised to int16 first (a 16 × 16
    multiplier) → (|·| < 2^30, k_a + k_b): the product's real value is a·b·2^(k_a + k_b)."""
    a16, ka = normalize16(a)
    b16, kb = normalize16(b)
    return a16 * b16, ka + kb


def sum_squares(w16):
    """S = Σ w16² over the last axis, < K·2^30 (int64; 48 bits suffice for K ≤ 2^17)."""
    w16 = np.asarray(w16, dtype=I64)
    return (w16 * w16).sum(axis=-1)


def rsqrt_fixed(s):
    """1/sqrt(S) ≈ r · 2^-(23 + e/2) for S > 0; (0, 0) for S = 0.

    e is the even shift putting t = S >> e (floor; a left shift when e < 0) in [2^14, 2^16);
    i = (t >> 7) - 128 in [0, 384), f = t & 127;
    r = T[i] + rshift_round((T[i+1] - T[i])·f, 7) with T = RSQRT_TABLE (Q0.16 of sqrt(2^14/t)).
    """
    s = np.asarray(s, dtype=I64)
    e = ((bit_length(s) - NORM_BITS) >> 1) << 1
    e = np.where(s > 0, e, 0)
    t = np.where(e >= 0, s >> np.maximum(e, 0), s << np.maximum(-e, 0))
    idx = np.clip((t >> 7) - RSQRT_BASE, 0, len(RSQRT_TABLE) - 2)
    lo, hi = RSQRT_TABLE[idx].astype(I64), RSQRT_TABLE[idx + 1].astype(I64)
    r = lo + rshift_round((hi - lo) * (t & 127), 7)
    return np.where(s > 0, r, 0), e


def quantize_int8(u):
    """Per-vector absmax int8: u → (q, a, k). (u16, k) = normalize16(u); a = max |u16|;
    R = ceil(127·2^32 / a); q = sign(u16)·((|u16|·R + 2^31) >> 32) in [-127, 127]
    (round half away from zero, as the float model's quantiser; R is rounded up so that exact
    ties still round away). a = 0 gives q = 0."""
    u16, k = normalize16(u)
    a = np.abs(u16).max(axis=-1)
    recip = np.where(a > 0, ((I64(INT8_MAX) << QUANT_RECIP_SHIFT) + a - 1) // np.maximum(a, 1), 0)
    mag = (np.abs(u16) * recip[..., None] + (I64(1) << (QUANT_RECIP_SHIFT - 1))) >> QUANT_RECIP_SHIFT
    return np.sign(u16) * mag, a, k


def ternary_matvec(codes, q):
    """acc[n] = Σ_k W[n, k]·q[k] for ternary W [N, K] and int8 q [..., K] → int32 range (K ≤ 2^24/127)."""
    return np.asarray(q, dtype=I64) @ np.asarray(codes, dtype=I64).T


def output_multiplier(scale, a, k, r, e):
    """The per-vector requantisation multiplier M = C·a·2^k·rsqrt(S) as (M_m, M_e), M = M_m·2^-M_e.

    p = rshift_round(a·r, 8) (< 2^24); M_m = rshift_round(C_m·p, 24) (< 2^31);
    M_e = clamp(C_s + 23 + e/2 - k - 32, 1, 62).
    """
    cm, cs = I64(scale[0]), I64(scale[1])
    p = rshift_round(np.asarray(a, dtype=I64) * r, 8)
    mm = rshift_round(cm * p, 24)
    me = np.clip(cs + 23 + (np.asarray(e, dtype=I64) >> 1) - k - 32, SCALE_SHIFT_MIN, SCALE_SHIFT_MAX)
    return mm, me


def requantize(acc, mm, me):
    """y = sat32(rshift_round(acc·M_m, M_e)): int32 accumulators → Q15.16 (|acc·M_m| < 2^62)."""
    return sat32(rshift_round(np.asarray(acc, dtype=I64) * mm, me))


def eps_term(z, p):
    """The RMSNorm eps in units of a sum of squares: E = eps·z·2^(-2p), saturated at 2^56.

    z (a positive integer, per vector) is cut to 31 bits: b = max(bit_length(z) - 31, 0),
    z' = z >> b; then E = rshift_round(EPS_M·z', EPS_S - b + 2p) with EPS_M·z' < 2^62; when that
    shift is ≤ 0 (a left shift) E saturates at 2^56 if bit_length(EPS_M·z') - shift > 56.
    """
    z = np.asarray(z, dtype=I64)
    b = np.maximum(bit_length(z) - NORM_Z_BITS, 0)
    prod = I64(EPS_M) * (z >> b)
    shift = EPS_S - b + 2 * np.asarray(p, dtype=I64)
    too_big = (shift <= 0) & (bit_length(prod) - shift > 56)
    exact = rshift_round(np.where(too_big, 0, prod), np.maximum(shift, -56))
    return np.where(too_big, EPS_TERM_MAX, np.minimum(exact, EPS_TERM_MAX))


def bitlinear_int(w, proj: dict, eps_ref=None):
    """One BitLinear on a scale-free input w [..., K] → Q15.16 outputs [..., N].

    w16 = normalize16(w) (shift k_w); S = sum_squares(w16); u = w16·G (the projection's own
    RMSNorm gain); q = quantize_int8(u); acc = W·q;
    y = requantize(acc, output_multiplier(C, a, k, rsqrt(S + E))).
    E is the norm's eps (`eps_term(z, p0 + k_w)`) when eps_ref = (z, p0) is given: inputs that
    are not the output of an RMSNorm (o_proj, down_proj) can be small, so eps matters there.
    """
    w16, kw = normalize16(w)
    total = sum_squares(w16)
    if eps_ref is not None:
        total = total + eps_term(eps_ref[0], eps_ref[1] + kw)
    r, e = rsqrt_fixed(total)
    q, a, k = quantize_int8(w16 * np.asarray(proj["gain"], dtype=I64))
    acc = ternary_matvec(proj["codes"], q)
    mm, me = output_multiplier(proj["scale"], a, k, r, e)
    return requantize(acc, mm[..., None], me[..., None])


def sigmoid_q(y, frac: int):
    """σ(y) in Q0.20 for y with `frac` fraction bits (frac ≥ 6): table on |y| in [0, 16), odd symmetry.

    z = min(|y|, 16·2^frac - 1); sh = frac - 6; i = z >> sh; f = z & (2^sh - 1);
    s = T[i] + rshift_round((T[i+1] - T[i])·f, sh); σ = s for y ≥ 0, 2^20 - s for y < 0.
    """
    y = np.asarray(y, dtype=I64)
    z = np.minimum(np.abs(y), (I64(1) << (SIGMOID_RANGE_LOG2 + frac)) - 1)
    sh = frac - SIGMOID_STEP_LOG2
    idx = z >> sh
    lo, hi = SIGMOID_TABLE[idx].astype(I64), SIGMOID_TABLE[idx + 1].astype(I64)
    s = lo + rshift_round((hi - lo) * (z & ((I64(1) << sh) - 1)), sh)
    return np.where(y >= 0, s, ONE_G - s)


def silu_q(y, frac: int):
    """silu(y) = rshift_round(y·σ(y), 20), in y's own format."""
    y = np.asarray(y, dtype=I64)
    return rshift_round(y * sigmoid_q(y, frac), FRAC_G)


def forget_gate(y_f, lower_bound):
    """f = σ + rshift_round(lb·(2^20 - σ), 20) = lb + (1 - lb)·σ(y_f), Q0.20. y_f: Q15.16."""
    s = sigmoid_q(y_f, FRAC_X)
    return s + rshift_round(np.asarray(lower_bound, dtype=I64) * (ONE_G - s), FRAC_G)


def input_gate(y_i, f):
    """i = silu(y_i)·(1 - f): Q15.16 × Q0.20 → Q11.20, rshift_round by 16."""
    return rshift_round(silu_q(y_i, FRAC_X) * (ONE_G - f), FRAC_X + FRAC_G - FRAC_H)


def recurrence(h, f, i):
    """h' = sat32(rshift_round(f·h, 20) + i): the HGRN state update in Q11.20."""
    return sat32(rshift_round(f * np.asarray(h, dtype=I64), FRAC_G) + i)


def token_mixer(x, h, layer: dict):
    """The attention half of a block: x (Q15.16 [..., d]), state h (Q11.20) → (o (Q15.16), h').

    o_proj's input is g_norm(y_g)·silu(h): its direction is normalize16(y_g)·normalize16(silu h)·G_g;
    its absolute scale (for o_proj's eps) needs ms(y_g), carried as z = Σ g16² and the shifts:
    real(w16) = w16·2^(k_g + k_s + k_p + k_w - 36 - g) / rms(y_g), rms(y_g)² = z·2^(2k_g - 32)/d,
    so E = eps·d·rms(y_g)²·2^(-2(...)) = eps·z·2^(-2p) with p = k_s + k_p + k_w - 20 - g.
    """
    w, _ = apply_gain(x, layer["attn_gain"])
    y_i, y_f, y_g = (bitlinear_int(w, layer[p]) for p in "ifg")
    f = forget_gate(y_f, layer["lower_bound"])
    h = recurrence(h, f, input_gate(y_i, f))
    g16, kg = normalize16(y_g)
    s16, ks = normalize16(silu_q(h, FRAC_H))
    o_in, kp = apply_gain(g16 * s16, layer["g_gain"])
    eps_ref = (sum_squares(g16), ks + kp - FRAC_H - int(layer["g_gain_shift"][0]))
    return bitlinear_int(o_in, layer["o"], eps_ref), h


def channel_mixer(x, layer: dict):
    """The GLU half of a block: x (Q15.16) → down_proj(silu(gate)·up) (Q15.16).

    p = product16(silu(gate), up) is worth p·2^(k - 32) (both factors Q15.16), so down_proj's eps
    reference is (z, p0) = (I, k - 32): E = eps·I·2^(-2(k - 32 + k_w)).
    """
    w, _ = apply_gain(x, layer["mlp_gain"])
    y = bitlinear_int(w, layer["gate"])
    inner = y.shape[-1] // 2
    p, k = product16(silu_q(y[..., :inner], FRAC_X), y[..., inner:])
    return bitlinear_int(p, layer["down"], (np.full_like(k, inner), k - 2 * FRAC_X))


def layer_view(model: dict, l: int) -> dict:
    """The constants of layer l as {"attn_gain": ..., "i": {"codes", "gain", "scale"}, ...}."""
    prefix = f"layers.{l}."
    out: dict = {}
    for name, v in model.items():
        if name.startswith(prefix):
            parts = name[len(prefix):].split(".")
            if len(parts) == 1:
                out[parts[0]] = v
            else:
                out.setdefault(parts[0], {})[parts[1]] = v
    return out


def head_view(model: dict) -> dict:
    return {k.split(".")[1]: v for k, v in model.items() if k.startswith("lm_head.")}


def num_layers(model: dict) -> int:
    return 1 + max(int(k.split(".")[1]) for k in model if k.startswith("layers."))


def embed(model: dict, tokens) -> np.ndarray:
    """Host: the Q15.16 embedding rows of `tokens` (any shape) → int32 [..., d]."""
    return model["embed"][np.asarray(tokens)]


def new_state(model: dict, batch: int) -> np.ndarray:
    """The zero state: int32 [L, B, d], Q11.20."""
    return np.zeros((num_layers(model), batch, model["embed"].shape[1]), dtype=np.int32)


def step(model: dict, x, state):
    """One decode step from embedding rows x (int32 [B, d]) and state (int32 [L, B, d])
    → (logits int32 [B, V] in Q15.16, new state int32 [L, B, d])."""
    x = np.asarray(x, dtype=I64)
    new = np.empty_like(state)
    for l in range(state.shape[0]):
        layer = layer_view(model, l)
        o, h = token_mixer(x, state[l], layer)
        new[l] = h
        x = sat32(x + o)
        x = sat32(x + channel_mixer(x, layer))
    logits = bitlinear_int(apply_gain(x, model["final_gain"])[0], head_view(model))
    return logits.astype(np.int32), new


def prefill(model: dict, tokens, state):
    """Tokens int [B, T] from state → (logits int32 [B, T, V], state): `step` once per position."""
    tokens = np.asarray(tokens)
    out = []
    for t in range(tokens.shape[1]):
        logits, state = step(model, embed(model, tokens[:, t]), state)
        out.append(logits)
    return np.stack(out, axis=1), state
