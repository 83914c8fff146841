"""Per-row absmax int8 for the embedding table of a packed model (`--embedding-dtype int8`).

Row r of a [V, d] table is stored as int8 codes q[r] and one float32 scale s[r]:

    s[r] = max_j |w[r, j]| / 127            (0 for an all-zero row)
    q[r, j] = clamp(round_half_even(w[r, j] / s[r]), -127, 127)
    dequantised w[r, j] = q[r, j] · s[r]    (float32), so |error| ≤ s[r] / 2

A row's scale follows its own range: an embedding row is one token's vector, and rare tokens'
rows are much smaller than frequent ones', which one scale for the table would crush to a few
levels. -128 is never used, so the code range is symmetric like the row's values.
Why int8 rather than fp8 (e4m3) at the same size: see docs/packed-format.md.
"""

from __future__ import annotations

import torch

from ..errors import UserError

QMAX = 127


def quantize_rows(w: torch.Tensor, name: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8 [V, d], scales float32 [V]) of a float [V, d] table."""
    w = w.detach().to(torch.float32)
    if w.dim() != 2:
        raise UserError(f"{name}: int8 rows need a 2-D table, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise UserError(f"{name}: has inf or NaN values, which int8 cannot hold — "
                        "use --embedding-dtype bfloat16 or float32")
    scale = w.abs().amax(dim=1) / QMAX
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero rows: codes 0, scale 0
    codes = torch.round(w / safe[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return codes, scale


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 [V, d] table from int8 codes [V, d] and float32 scales [V]."""
    return codes.to(torch.float32) * scale.to(torch.float32)[:, None]


def check_rows(codes: torch.Tensor, scale: torch.Tensor, where: str) -> None:
    """Refuse stored codes/scales that do not fit together (a hand-edited or foreign file)."""
    if codes.dtype != torch.int8 or codes.dim() != 2:
        raise UserError(f"{where}: int8 embedding codes must be I8 [V, d], got {codes.dtype} "
                        f"{tuple(codes.shape)} — re-run `mmfree quantize`")
    if scale.dtype != torch.float32 or tuple(scale.shape) != (codes.shape[0],):
        raise UserError(f"{where}: int8 embedding row scales must be F32 [{codes.shape[0]}], got "
                        f"{scale.dtype} {tuple(scale.shape)} — re-run `mmfree quantize`")
