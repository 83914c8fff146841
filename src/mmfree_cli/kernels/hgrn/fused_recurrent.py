"""Fused recurrent HGRN kernel: one program per (channel block, sequence) walks the whole sequence.

For short sequences (decode steps, short prompts) this beats the chunked scan: one launch, one
read of i and f, one write of h, no second pass. Backward runs the same loop from the end
(dh_t = dout_t + f_{t+1}·dh_{t+1}) and shares `chunk.scan_backward` for di, df and dh0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk import _block_d, scan_backward


@triton.jit
def _recurrent_kernel(X, F, H0, H, HT, HF, HF0, T, D, BD: tl.constexpr, REVERSE: tl.constexpr,
                      HAS_H0: tl.constexpr, HAS_HF0: tl.constexpr):
    """Forward: h_t = f_t·h_{t-1} + x_t, h_T into HT. Reverse: h_t = f_{t+1}·h_{t+1} + x_t and
    df_t = h_t·hf_{t-1} into HT (a [B, T, D] buffer then)."""
    i_d, i_b = tl.program_id(0), tl.program_id(1)
    cols = i_d * BD + tl.arange(0, BD)
    cmask = cols < D
    base = i_b.to(tl.int64) * T * D
    if HAS_H0:
        h = tl.load(H0 + i_b.to(tl.int64) * D + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BD], dtype=tl.float32)
    for j in range(T):
        t = T - 1 - j if REVERSE else j
        if REVERSE:
            a = tl.load(F + base + (t + 1) * D + cols, mask=cols < tl.where(t + 1 < T, D, 0), other=0.0).to(tl.float32)
        else:
            a = tl.load(F + base + t * D + cols, mask=cmask, other=0.0).to(tl.float32)
        h = a * h + tl.load(X + base + t * D + cols, mask=cmask, other=0.0).to(tl.float32)
        tl.store(H + base + t * D + cols, h, mask=cmask)
        if REVERSE:
            hp = tl.load(HF + base + (t - 1) * D + cols, mask=cols < tl.where(t >= 1, D, 0), other=0.0)
            if HAS_HF0:
                hp += tl.load(HF0 + i_b.to(tl.int64) * D + cols, mask=cols < tl.where(t == 0, D, 0), other=0.0)
            tl.store(HT + base + t * D + cols, h * hp, mask=cmask)
    if not REVERSE:
        tl.store(HT + i_b.to(tl.int64) * D + cols, h, mask=cmask)


def recurrent_scan(x: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None, reverse: bool,
                   hf: torch.Tensor | None = None, hf0: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `chunk.chunk_scan`, in one sequential pass."""
    B, T, D = x.shape
    h = torch.empty_like(x)
    second = torch.empty_like(x) if reverse else torch.empty(B, D, dtype=torch.float32, device=x.device)
    BD = _block_d(D)
    _recurrent_kernel[(triton.cdiv(D, BD), B)](x, f, h0 if h0 is not None else x, h, second,
                                               hf if hf is not None else x, hf0 if hf0 is not None else x,
                                               T, D, BD=BD, REVERSE=reverse, HAS_H0=h0 is not None,
                                               HAS_HF0=hf0 is not None)
    return h, second


class RecurrentScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i, f, h0):
        i, f = i.float().contiguous(), f.float().contiguous()
        h0c = h0.float().contiguous() if h0 is not None else None
        h, hT = recurrent_scan(i, f, h0c, reverse=False)
        ctx.save_for_backward(f, h, h0c)
        ctx.set_materialize_grads(False)
        return h, hT

    @staticmethod
    def backward(ctx, dh, dhT):
        f, h, h0 = ctx.saved_tensors
        return scan_backward(dh, dhT, f, h, h0, recurrent_scan)


def hgrn_fused_recurrent(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused recurrent Triton scan, same contract as `hgrn_scan_naive` (outputs float32)."""
    return RecurrentScan.apply(i, f, h0)
