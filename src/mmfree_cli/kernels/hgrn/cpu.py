"""The HGRN recurrence h_t = f_t ⊙ h_{t-1} + i_t for CPU training: a time-major scan with its
reverse scan written out as the backward.

On a CPU the work of the recurrence is O(B·T·D) multiply-adds either way; what costs is overhead.
The twin's parallel scan (`naive.py`) does log2(T) passes over the whole tensor with a `cat` each,
and autograd then replays all of them. Here each time step is one fused `addcmul` over a
contiguous [B, D] slice of a time-major copy, so a step costs one small kernel and nothing is
recorded. The backward is the adjoint recurrence, run from the end:

    d_t  = dh_t + f_{t+1} ⊙ d_{t+1}     (d_T-1 also gets the gradient of the returned last state)
    di_t = d_t      df_t = d_t ⊙ h_{t-1}      dh0 = f_0 ⊙ d_0

Both directions multiply gates directly (no division or log-space), so gates near zero stay exact.
`kernels.hgrn` sends CPU float32/float64 sequences up to `CPU_SCAN_MAX_T` here.
"""

from __future__ import annotations

import torch


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """A fresh contiguous [T, B, D] copy of [B, T, D] (fresh: the backward writes into it)."""
    return x.transpose(0, 1).clone(memory_format=torch.contiguous_format)


class HGRNScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i, f, h0):
        it, ft = _time_major(i), _time_major(f)
        h = torch.empty_like(it)  # [T, B, D]
        prev = h0.to(i.dtype) if h0 is not None else None
        for t in range(it.shape[0]):
            if prev is None:
                h[t].copy_(it[t])
            else:
                torch.addcmul(it[t], ft[t], prev, out=h[t])
            prev = h[t]
        ctx.save_for_backward(ft, h, h0)
        return h.transpose(0, 1).contiguous(), h[-1].clone()

    @staticmethod
    def backward(ctx, dh, dlast):
        ft, h, h0 = ctx.saved_tensors
        d = _time_major(dh) if dh is not None else torch.zeros_like(h)  # [T, B, D], becomes d_t
        if dlast is not None:
            d[-1].add_(dlast)
        for t in range(d.shape[0] - 2, -1, -1):
            d[t].addcmul_(ft[t + 1], d[t + 1])
        df = torch.empty_like(d)
        df[1:] = d[1:] * h[:-1]
        if h0 is not None:
            torch.mul(d[0], h0.to(d.dtype), out=df[0])
        else:
            df[0].zero_()
        dh0 = (ft[0] * d[0]).to(h0.dtype) if h0 is not None and ctx.needs_input_grad[2] else None
        return d.transpose(0, 1).contiguous(), df.transpose(0, 1).contiguous(), dh0


def hgrn_scan_cpu(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `hgrn_scan_naive`: i, f: [B, T, D]; h0: [B, D] or None → (h [B, T, D], h_T [B, D])."""
    return HGRNScanCPU.apply(i, f, h0)
