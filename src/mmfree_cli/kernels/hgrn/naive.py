"""The HGRN recurrence h_t = f_t ⊙ h_{t-1} + i_t in plain PyTorch: the spec for every scan kernel.

Two forms that must agree:
- `hgrn_scan_naive`: a parallel (Hillis–Steele) scan over time, log2(T) vectorised steps and no
  Python loop over time steps. It multiplies gates directly (no log-space), so it stays stable
  when gates are near zero, and autograd differentiates it.
- `hgrn_recurrent_naive`: the plain loop, for tests and as the definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..bitlinear.naive import rms_norm


def hgrn_scan_naive(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs i, gates f: [B, T, D]; initial state h0: [B, D] or None → (h: [B, T, D], h_T: [B, D])."""
    a, b = f, i
    if h0 is not None:
        b = torch.cat([b[:, :1] + a[:, :1] * h0[:, None].to(b.dtype), b[:, 1:]], dim=1)
    T = b.shape[1]
    step = 1
    while step < T:
        # compose each position with the one `step` earlier: (a1,b1)∘(a2,b2) = (a1·a2, a2·b1 + b2)
        b = torch.cat([b[:, :step], b[:, step:] + a[:, step:] * b[:, :-step]], dim=1)
        a = torch.cat([a[:, :step], a[:, step:] * a[:, :-step]], dim=1)
        step *= 2
    return b, b[:, -1]


def hgrn_recurrent_naive(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, one step at a time. Same shapes as `hgrn_scan_naive`."""
    h = torch.zeros_like(i[:, 0]) if h0 is None else h0.to(i.dtype)
    out = []
    for t in range(i.shape[1]):
        h = f[:, t] * h + i[:, t]
        out.append(h)
    return torch.stack(out, dim=1), h


def hgrn_gated_naive(yi: torch.Tensor, yf: torch.Tensor, yg: torch.Tensor, lb: torch.Tensor | None,
                     gain: torch.Tensor, eps: float, h0: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The token mixer between its projections and o_proj, in float32 (float64 stays float64):

        f = lb + (1 − lb)·sigmoid(yf);  i = silu(yi)·(1 − f);  h = scan(i, f, h0)
        o = rms_norm(yg)·gain ⊙ silu(h)   (in yg's dtype)

    yi, yf, yg: [B, T, D]; lb, gain: [D] → (o [B, T, D], h_T [B, D])."""
    dtype = torch.float64 if yg.dtype == torch.float64 else torch.float32
    f = torch.sigmoid(yf.to(dtype))
    if lb is not None:
        f = lb.to(dtype) + (1 - lb.to(dtype)) * f
    i = F.silu(yi.to(dtype)) * (1 - f)
    h, last = hgrn_scan_naive(i, f, None if h0 is None else h0.to(dtype))
    o = rms_norm(yg.to(dtype), gain, eps) * F.silu(h)
    return o.to(yg.dtype), last
