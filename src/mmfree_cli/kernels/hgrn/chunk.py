"""Chunked parallel scan for the HGRN recurrence h_t = f_t ⊙ h_{t-1} + i_t on GPU, with backward.

Two passes over time, as flash-linear-attention's chunked HGRN (written here from the math, in
linear space like `naive.hgrn_scan_naive`, so gates near zero stay exact):

    1. every (chunk of BT steps, channel block, sequence) in parallel: the local scan from a zero
       state, h̃_t, and the running gate product p_t = Π f over the chunk so far;
    2. per (channel block, sequence), chunk after chunk: h_t = h̃_t + p_t · h_(end of last chunk),
       a whole [BT, BD] tile at once.

The backward is the same scan run from the end: dh_t = dout_t + f_{t+1}·dh_{t+1}; then
di = dh, df_t = dh_t·h_{t-1} (written by the second pass), dh0 = f_0·dh_0. Only f and the output h are saved (the model keeps
both alive anyway). Everything is computed in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interpret import interpreting as _interpreting

CHUNK = 64
"""Time steps per chunk (BT)."""


@triton.jit
def _chunk_local_kernel(X, F, H, P, T, D, BT: tl.constexpr, BD: tl.constexpr, REVERSE: tl.constexpr):
    """Local scan of one chunk from zero; forward gate f_t, reverse gate f_{t+1} (0 past the end)."""
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = i_d * BD + tl.arange(0, BD)
    base = i_b.to(tl.int64) * T * D
    h = tl.zeros([BD], dtype=tl.float32)
    p = tl.full([BD], 1.0, dtype=tl.float32)
    for j in range(BT):
        t = i_c * BT + (BT - 1 - j if REVERSE else j)
        valid = cols < tl.where(t < T, D, 0)  # one comparison: the interpreter's masks want that
        if REVERSE:
            a = tl.load(F + base + (t + 1) * D + cols, mask=cols < tl.where(t + 1 < T, D, 0), other=0.0).to(tl.float32)
        else:
            a = tl.load(F + base + t * D + cols, mask=valid, other=1.0).to(tl.float32)
        x = tl.load(X + base + t * D + cols, mask=valid, other=0.0).to(tl.float32)
        h = a * h + x
        p = p * a
        tl.store(H + base + t * D + cols, h, mask=valid)
        tl.store(P + base + t * D + cols, p, mask=valid)


@triton.jit
def _store_df(dh, HF, HF0, DF, base, i_b, t, cols, cmask, mask, D, HAS_HF0: tl.constexpr):
    """df_t = dh_t · h_{t-1} (h_{-1} = h0, or 0) for a [BT, BD] tile of time steps t [BT]."""
    tt = t[:, None]
    hp = tl.load(HF + base + (tt - 1) * D + cols[None, :], mask=mask & (tt >= 1), other=0.0)
    if HAS_HF0:
        h0 = tl.load(HF0 + i_b.to(tl.int64) * D + cols, mask=cmask, other=0.0)
        hp += tl.where(tt == 0, h0[None, :], 0.0)
    tl.store(DF + base + tt * D + cols[None, :], dh * hp, mask=mask)


@triton.jit
def _chunk_carry_kernel(H, P, H0, HT, HF, HF0, DF, T, D, BT: tl.constexpr, BD: tl.constexpr,
                        REVERSE: tl.constexpr, HAS_H0: tl.constexpr, HAS_HF0: tl.constexpr):
    """Chunk after chunk: h += p · carry over a [BT, BD] tile; carry = the chunk's last state.
    Reverse (backward) also writes df_t = dh_t · h_{t-1}, reading the forward states HF (HF0 at t=0)."""
    i_d, i_b = tl.program_id(0), tl.program_id(1)
    cols = i_d * BD + tl.arange(0, BD)
    cmask = cols < D
    rows = tl.arange(0, BT)
    base = i_b.to(tl.int64) * T * D
    if HAS_H0:
        carry = tl.load(H0 + i_b.to(tl.int64) * D + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BD], dtype=tl.float32)
    n_chunks = tl.cdiv(T, BT)
    for c in range(n_chunks):
        chunk = n_chunks - 1 - c if REVERSE else c
        t = chunk * BT + rows
        offs = base + t[:, None] * D + cols[None, :]
        mask = (t[:, None] < T) & cmask[None, :]
        h = tl.load(H + offs, mask=mask, other=0.0) + tl.load(P + offs, mask=mask, other=0.0) * carry[None, :]
        tl.store(H + offs, h, mask=mask)
        if REVERSE:
            _store_df(h, HF, HF0, DF, base, i_b, t, cols, cmask, mask, D, HAS_HF0)
        last = chunk * BT if REVERSE else tl.minimum(chunk * BT + BT, T) - 1
        carry = tl.sum(tl.where((t == last)[:, None], h, 0.0), 0)
    if not REVERSE:
        tl.store(HT + i_b.to(tl.int64) * D + cols, carry, mask=cmask)


def _block_d(D: int) -> int:
    return min(64 if _interpreting() else 128, triton.next_power_of_2(D))


def chunk_scan(x: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None, reverse: bool,
               chunk: int = CHUNK, hf: torch.Tensor | None = None, hf0: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear scan over time of x with gates f ([B, T, D], float32 contiguous) → (h, h_T).

    Forward: h_t = f_t·h_{t-1} + x_t from h0. Reverse (the backward, x = dL/dh): h_t = f_{t+1}·h_{t+1}
    + x_t, and the second result is df_t = h_t · hf_{t-1} from the forward states hf (hf0 at t = 0).
    """
    B, T, D = x.shape
    h = torch.empty_like(x)
    p = torch.empty_like(x)
    second = torch.empty_like(x) if reverse else torch.empty(B, D, dtype=torch.float32, device=x.device)
    BD = _block_d(D)
    _chunk_local_kernel[(triton.cdiv(D, BD), triton.cdiv(T, chunk), B)](x, f, h, p, T, D, BT=chunk, BD=BD,
                                                                      REVERSE=reverse)
    _chunk_carry_kernel[(triton.cdiv(D, BD), B)](h, p, h0 if h0 is not None else x, second,
                                                 hf if hf is not None else x, hf0 if hf0 is not None else x,
                                                 second, T, D, BT=chunk, BD=BD, REVERSE=reverse,
                                                 HAS_H0=h0 is not None, HAS_HF0=hf0 is not None)
    return h, second


def scan_backward(dh_out: torch.Tensor | None, dhT: torch.Tensor | None, f: torch.Tensor, h: torch.Tensor,
                  h0: torch.Tensor | None, scan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients (di, df, dh0) of h_t = f_t·h_{t-1} + i_t, given dL/dh and dL/dh_T (None: unused);
    `scan(x, f, h0, reverse, hf, hf0)` is the kernel form (chunked or recurrent)."""
    dh_out = torch.zeros_like(h) if dh_out is None else dh_out.float().contiguous()
    if dhT is not None:  # the final state is also h[:, -1]: its gradient joins the last step's
        dh_out = dh_out.clone()
        dh_out[:, -1] += dhT.float()
    dh, df = scan(dh_out, f, None, True, h, h0)
    dh0 = f[:, 0] * dh[:, 0] if h0 is not None else None
    return dh, df, dh0


class ChunkScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, i, f, h0, chunk):
        i, f = i.float().contiguous(), f.float().contiguous()
        h0c = h0.float().contiguous() if h0 is not None else None
        h, hT = chunk_scan(i, f, h0c, reverse=False, chunk=chunk)
        ctx.save_for_backward(f, h, h0c)
        ctx.set_materialize_grads(False)  # an unused h_T then costs nothing in backward
        ctx.chunk = chunk
        return h, hT

    @staticmethod
    def backward(ctx, dh, dhT):
        f, h, h0 = ctx.saved_tensors
        scan = lambda x, g, h0_, reverse, hf, hf0: chunk_scan(x, g, h0_, reverse, ctx.chunk, hf, hf0)  # noqa: E731
        return (*scan_backward(dh, dhT, f, h, h0, scan), None)


def hgrn_chunk(i: torch.Tensor, f: torch.Tensor, h0: torch.Tensor | None = None, chunk: int = CHUNK
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked Triton scan, same contract as `hgrn_scan_naive` (outputs float32); chunk: a power of 2."""
    return ChunkScan.apply(i, f, h0, chunk)
