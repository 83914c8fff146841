"""Per-token work between two ternary products at inference, in plain PyTorch: the spec for
`fused.py`. Everything computes in float32; outputs feeding a product are int8 codes q and the
per-token scale s of `bitlinear.naive` (so q/s is exactly that module's x_q).

    norm_quant     x ─(RMSNorm γ₀, eps₀)?─▶ for each of P BitLinear gains γ_p: q_p, s_p
    hgrn_gates     yi, yf, lb ─▶ f = lb + (1−lb)·σ(yf),  i = silu(yi)·(1−f)
    hgrn_output    yg, h ─▶ g_norm(yg) ⊙ silu(h) ─▶ o_proj's q, s
    hgrn_step      gates, then h = f ⊙ h + i in place, then hgrn_output  (one decoding step)
    glu_quant      [gate | up] ─▶ silu(gate) ⊙ up ─▶ down_proj's q, s
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..bitlinear.naive import BITLINEAR_NORM_EPS, activation_scale, rms_norm, round_half_away


def quantize_codes(xn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂ [M, K] float32 → (q int8 [M, K], s float32 [M]) with q/s the int8 fake-quant of x̂."""
    s = activation_scale(xn)
    return round_half_away(xn * s).clamp(-128, 127).to(torch.int8), s[:, 0]


def norm_quant_naive(x: torch.Tensor, gains: torch.Tensor, pre_gain: torch.Tensor | None = None,
                     pre_eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K], gains [P, K] → q int8 [P, M, K], s [P, M]."""
    x = x.float()
    if pre_gain is not None:
        x = rms_norm(x, pre_gain, pre_eps)
    parts = [quantize_codes(rms_norm(x, g, BITLINEAR_NORM_EPS)) for g in gains]
    return torch.stack([q for q, _ in parts]), torch.stack([s for _, s in parts])


def hgrn_gates_naive(yi: torch.Tensor, yf: torch.Tensor, lb: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activations [M, d] → (i, f) float32 [M, d]; lb [d] is the layer's lower bound or None."""
    f = torch.sigmoid(yf.float())
    if lb is not None:
        f = lb + (1 - lb) * f
    return F.silu(yi.float()) * (1 - f), f


def hgrn_output_naive(yg: torch.Tensor, h: torch.Tensor, g_norm: torch.Tensor, o_norm: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """g_proj output, state [M, d] → o_proj's (q [1, M, d], s [1, M])."""
    o = rms_norm(yg.float(), g_norm, eps) * F.silu(h.float())
    return norm_quant_naive(o, o_norm[None])


def hgrn_step_naive(y: torch.Tensor, state: torch.Tensor, lb: torch.Tensor | None, g_norm: torch.Tensor,
                    o_norm: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y = [yi | yf | yg] [M, 3d]; state [M, d] float32, updated in place → o_proj's (q, s)."""
    yi, yf, yg = y.chunk(3, dim=-1)
    i, f = hgrn_gates_naive(yi, yf, lb)
    state.copy_(f * state + i)
    return hgrn_output_naive(yg, state, g_norm, o_norm, eps)


def glu_quant_naive(y: torch.Tensor, down_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y = [gate | up] [M, 2I] → down_proj's (q [1, M, I], s [1, M])."""
    gate, up = y.float().chunk(2, dim=-1)
    return norm_quant_naive(F.silu(gate) * up, down_norm[None])
