"""The integer spec's number formats, lookup tables and per-model constants (docs/integer-spec.md).

Everything an integer-only engine (numpy reference, CPU engine, FPGA core) needs besides the
ternary codes lives here: the fixed-point formats as named constants, the two lookup tables
(sigmoid, rsqrt) and the per-projection constants `quant.intmodel` builds the integer model from,
once, on the host, at export time. Floats appear only in that conversion; the decode step never sees one.

An integer model is a flat dict of numpy arrays (names below), so it round-trips through
safetensors unchanged:

    embed                      int32 [V, d]  Q15.16 embedding rows (the host fetches one per token)
    final_gain                 int16 [d]     final norm gain γ, mantissas
    lm_head.{codes,gain,scale} the head projection
    layers.{l}.attn_gain       int16 [d]     attn_norm γ
    layers.{l}.g_gain          int16 [d]     g_norm γ
    layers.{l}.g_gain_shift    int64 [1]     g of g_gain (o_proj's eps needs the absolute scale)
    layers.{l}.mlp_gain        int16 [d]     mlp_norm γ
    layers.{l}.lower_bound     int32 [d]     forget-gate floor lb, Q.20 (zeros in layer 0)
    layers.{l}.{i,f,g,o,gate,down}.codes  int8 [N, K]  ternary weights -1/0/+1
    layers.{l}.{...}.gain      int16 [K]     the projection's own RMSNorm γ, mantissas
    layers.{l}.{...}.scale     int64 [2]     (C_m, C_s): C = C_m·2^-C_s = β·√K·2^(FRAC_X-g)/127
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..kernels.numerics import BITLINEAR_NORM_EPS

FRAC_X = 16
"""Fractional bits of the residual stream, projection outputs and logits: int32 Q15.16."""
FRAC_G = 20
"""Fractional bits of sigmoid outputs and gates (f, 1-f, lower bound): unsigned Q0.20 in [0, 2^20]."""
FRAC_H = 20
"""Fractional bits of the recurrent state h: int32 Q11.20."""
ONE_G = 1 << FRAC_G
INT8_MAX = 127
NORM_BITS = 15
"""Block-normalised vectors have |v| < 2^15 (int16), the input width of every element multiplier."""
GAIN_BITS = 15
"""Gain mantissas: max |γ|·2^g in [2^14, 2^15) per vector, int16."""
QUANT_RECIP_SHIFT = 32
"""The int8 quantiser multiplies by R = floor(127·2^32 / a) and shifts right by 32."""

SIGMOID_SEGMENTS = 1024
SIGMOID_RANGE_LOG2 = 4
"""The sigmoid table covers |y| in [0, 16) in 1024 segments of 1/64, linearly interpolated."""
SIGMOID_STEP_LOG2 = int(math.log2(SIGMOID_SEGMENTS)) - SIGMOID_RANGE_LOG2  # 6: 64 segments per unit

RSQRT_BASE = 128
RSQRT_SEGMENTS = 384
"""rsqrt covers t in [2^14, 2^16) as (t >> 7) - 128 in [0, 384), 7 fraction bits interpolated."""
RSQRT_FRAC = 16
"""Table entries are sqrt(2^14 / t) in Q0.16 (values 2^15 .. 2^16)."""

SCALE_SHIFT_MIN, SCALE_SHIFT_MAX = 1, 62
"""The requantisation shift is clamped to this range (saturating the multiplier's exponent)."""

BITLINEAR_EPS = BITLINEAR_NORM_EPS
"""eps of the RMSNorm inside every BitLinear (`kernels.numerics.BITLINEAR_NORM_EPS`)."""
EPS_TERM_MAX = 1 << 56
"""The eps term added to a sum of squares saturates here (the sum itself is < 2^43)."""
NORM_Z_BITS = 31
"""The eps term's integer factor z is cut to 31 bits before it meets the 31-bit eps mantissa."""

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1

SPEC_VERSION = 1
PROJECTIONS = ("i", "f", "g", "o", "gate", "down")


def round_half_up_float(x: np.ndarray) -> np.ndarray:
    """floor(x + 0.5) in float64: how every table entry and constant is rounded at export."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def sigmoid_table() -> np.ndarray:
    """int32 [1025]: T[i] = round_half_up(σ(i/64)·2^20), i = 0..1024 (the last is the end point)."""
    y = np.arange(SIGMOID_SEGMENTS + 1, dtype=np.float64) / (1 << SIGMOID_STEP_LOG2)
    return round_half_up_float(ONE_G / (1.0 + np.exp(-y))).astype(np.int32)


def rsqrt_table() -> np.ndarray:
    """int32 [385]: T[i] = round_half_up(2^16·sqrt(128 / (128 + i))), i = 0..384."""
    i = np.arange(RSQRT_SEGMENTS + 1, dtype=np.float64)
    return round_half_up_float((1 << RSQRT_FRAC) * np.sqrt(RSQRT_BASE / (RSQRT_BASE + i))).astype(np.int32)


SIGMOID_TABLE = sigmoid_table()
RSQRT_TABLE = rsqrt_table()


def table_digest() -> str:
    """sha256 of both tables (int32 little-endian): pinned by the tests and recorded in exports."""
    h = hashlib.sha256()
    h.update(SIGMOID_TABLE.astype("<i4").tobytes())
    h.update(RSQRT_TABLE.astype("<i4").tobytes())
    return h.hexdigest()


def gain_mantissas(gamma: np.ndarray) -> tuple[np.ndarray, int]:
    """γ (float) → (int16 mantissas G, shift g) with G = round(γ·2^g), max |G| in [2^14, 2^15)."""
    gamma = np.asarray(gamma, dtype=np.float64)
    top = float(np.abs(gamma).max()) if gamma.size else 0.0
    if top == 0.0:
        return np.zeros(gamma.shape, dtype=np.int16), 0
    _, exponent = math.frexp(top)  # top = m·2^exponent, m in [0.5, 1)
    g = GAIN_BITS - exponent
    mant = np.sign(gamma) * round_half_up_float(np.abs(gamma) * 2.0 ** g)
    return np.clip(mant, -INT16_MAX, INT16_MAX).astype(np.int16), g


def dyadic(c: float) -> np.ndarray:
    """A positive constant c → int64 [C_m, C_s] with c ≈ C_m·2^-C_s and C_m in [2^30, 2^31)."""
    if not c > 0.0 or not math.isfinite(c):
        return np.array([0, 0], dtype=np.int64)
    m, e = math.frexp(c)  # c = m·2^e, m in [0.5, 1)
    cm = int(math.floor(m * 2.0 ** 31 + 0.5))
    if cm == 1 << 31:
        cm, e = 1 << 30, e + 1
    return np.array([cm, 31 - e], dtype=np.int64)


EPS_M, EPS_S = (int(v) for v in dyadic(BITLINEAR_EPS))
"""The BitLinear eps as a dyadic constant: eps ≈ EPS_M·2^-EPS_S, EPS_M in [2^30, 2^31)."""


def projection_constants(codes: np.ndarray, beta: float, norm_gain: np.ndarray) -> dict[str, np.ndarray]:
    """One BitLinear (ternary codes [N, K], its stored β, its RMSNorm γ [K]) → codes (int8),
    gain (int16 [K]) and scale (int64 [2]). β is kept exactly as stored, never re-derived."""
    codes = np.asarray(codes)
    if codes.size and not np.isin(codes, (-1, 0, 1)).all():
        raise ValueError("projection_constants: codes must hold only -1, 0 and +1")
    gain, g = gain_mantissas(norm_gain)
    c = beta * math.sqrt(codes.shape[1]) * 2.0 ** (FRAC_X - g) / INT8_MAX
    return {"codes": codes.astype(np.int8), "gain": gain, "scale": dyadic(c)}


def lower_bound_q(lb: np.ndarray) -> np.ndarray:
    """Forget-gate floor lb in [0, 1] → int32 Q0.20."""
    return np.clip(round_half_up_float(np.asarray(lb, dtype=np.float64) * ONE_G), 0, ONE_G).astype(np.int32)


def embedding_q(emb: np.ndarray) -> np.ndarray:
    """Embedding table → int32 Q15.16, rounded half away from zero and saturated."""
    e = np.asarray(emb, dtype=np.float64) * (1 << FRAC_X)
    q = np.sign(e) * np.floor(np.abs(e) + 0.5)
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int32)


def logits_to_float(logits_q: np.ndarray) -> np.ndarray:
    """Host side: Q15.16 logits → float32 for sampling."""
    return (np.asarray(logits_q, dtype=np.float64) / (1 << FRAC_X)).astype(np.float32)
