"""Packed ternary × int8 product in plain PyTorch: the spec for the Triton kernel in `packed.py`.

    out[:, g·Ng:(g+1)·Ng] (+)= (q[g] · unpack_i2(W[g·Ng:(g+1)·Ng])ᵀ) · β[g] / s[g]

q: int8 activations [G, M, K] (G groups share one launch: i/f/g projections read three differently
normalised copies of the same token); s: their per-token scales [G, M]; W: `i2`-packed codes
[N, ceil(K/4)] (quant.packing: four codes w+1 per byte along K), N = G·Ng; β: per-group scales [G].

`gemv_*_naive` are the twins of `decode.py`'s fused one-token GEMVs: the rowwise twin that makes the
int8 codes, then the product above.
"""

from __future__ import annotations

import torch

from ..rowwise.naive import glu_quant_naive, hgrn_step_naive, norm_quant_naive


def unpack_i2_codes(packed: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 [N, ceil(k/4)] → int8 [N, k] of −1/0/+1 (byte j holds elements 4j..4j+3, low bits first)."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    codes = (packed.unsqueeze(-1) >> shifts) & 3
    return (codes.reshape(packed.shape[0], -1)[:, :k].to(torch.int8) - 1)


def ternary_gemm_naive(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                       out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """See the module doc. Returns float32 [M, N]; with `accumulate`, adds into `out` in place."""
    G, M, K = q.shape
    w = unpack_i2_codes(packed, K).to(torch.float64)
    ng = w.shape[0] // G
    parts = [(q[g].to(torch.float64) @ w[g * ng:(g + 1) * ng].T) * (beta[g].double() / s[g].double()[:, None])
             for g in range(G)]
    y = torch.cat(parts, dim=1).float()
    if out is None:
        return y
    if accumulate:
        out += y
    else:
        out.copy_(y)
    return out


def gemv_norm_naive(x: torch.Tensor, pre: torch.Tensor, pre_eps: float, gains: torch.Tensor, packed: torch.Tensor,
                    beta: torch.Tensor, out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """x [1, K] ─ rms_norm(pre, pre_eps) ─ BitLinear norms γ_g [G, K] and quant ─ product → [1, N]."""
    q, s = norm_quant_naive(x, gains, pre, pre_eps)
    return ternary_gemm_naive(q, s, packed, beta, out, accumulate)


def gemv_step_naive(y: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor, lb: torch.Tensor | None,
                    g_norm: torch.Tensor, eps: float, o_norm: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                    out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """y = [yi | yf | yg] [1, 3d], state h0 [d] → h1 [d] (written), o_proj's product → [1, N]."""
    state = h0.float().clone()[None]
    q, s = hgrn_step_naive(y, state, lb, g_norm, o_norm, eps)
    h1.copy_(state[0])
    return ternary_gemm_naive(q, s, packed, beta, out, accumulate)


def gemv_glu_naive(y: torch.Tensor, down_norm: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                   out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """y = [gate | up] [1, 2I] → down_proj's product [1, N]."""
    q, s = glu_quant_naive(y, down_norm)
    return ternary_gemm_naive(q, s, packed, beta, out, accumulate)


def to_planar(q: torch.Tensor) -> torch.Tensor:
    """Codes [..., K] → planar order [..., 4·ceil(K/4)]: element k at column (k mod 4)·KB + k div 4,
    padding 0 (the order `batched.py`'s product reads)."""
    k = q.shape[-1]
    kb = -(-k // 4)
    padded = torch.nn.functional.pad(q, (0, 4 * kb - k))
    return padded.reshape(*q.shape[:-1], kb, 4).transpose(-1, -2).reshape(*q.shape[:-1], 4 * kb).contiguous()


def from_planar(q: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_planar`, padding kept: [..., 4·KB] → [..., 4·KB] in element order."""
    kb = q.shape[-1] // 4
    return q.reshape(*q.shape[:-1], 4, kb).transpose(-1, -2).reshape(q.shape).contiguous()


def planar_gemm_naive(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                      out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """Twin of `batched.planar_gemm`: planar codes q [G, M, 4·KB] → `ternary_gemm_naive`."""
    return ternary_gemm_naive(from_planar(q), s, packed, beta, out, accumulate)


def rows_norm_naive(x, pre, pre_eps, gains):
    q, s = norm_quant_naive(x, gains, pre, pre_eps)
    return to_planar(q), s


def rows_step_naive(y, state, lb, g_norm, o_norm, eps):
    q, s = hgrn_step_naive(y, state, lb, g_norm, o_norm, eps)
    return to_planar(q), s


def rows_glu_naive(y, down_norm):
    q, s = glu_quant_naive(y, down_norm)
    return to_planar(q), s
