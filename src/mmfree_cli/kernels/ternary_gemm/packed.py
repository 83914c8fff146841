"""Triton GEMM/GEMV of int8 activations with 2-bit packed ternary weights, rescale fused.

The weights stay packed in memory (`i2`: byte j of a row holds codes of elements 4j..4j+3), so
a decode step reads 2 bits a weight. A [BK/4, BN] tile of bytes unpacks into four [BK/4, BN]
planes of codes; plane p holds elements k0 + 4j + p, so it meets the activations loaded with
stride 4 from column k0 + p: four int8 tensor-core products per tile, no shuffles. Accumulation
is int32 and exact; the epilogue applies β[g]/s[g, m] and either stores or atomically adds into
the output (split-K, and the residual stream added in place).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs():
    if _interpreting():
        return [triton.Config({"BM": 16, "BN": 16, "BK": 128, "SPLIT_K": 2}, num_warps=4)]
    small = [triton.Config({"BM": 16, "BN": bn, "BK": bk, "SPLIT_K": sk}, num_warps=w, num_stages=st)
             for bn, bk, sk, w, st in [(16, 256, 1, 4, 4), (32, 256, 2, 4, 4), (64, 256, 4, 4, 3),
                                       (16, 512, 2, 4, 3), (32, 128, 4, 4, 4), (64, 128, 8, 4, 4),
                                       (32, 512, 1, 4, 3), (128, 256, 4, 8, 3)]]
    mid = [triton.Config({"BM": 64, "BN": bn, "BK": bk, "SPLIT_K": sk}, num_warps=w, num_stages=st)
           for bn, bk, sk, w, st in [(64, 256, 1, 4, 3), (64, 128, 2, 4, 4), (128, 128, 1, 8, 3),
                                     (128, 256, 2, 8, 3), (32, 256, 2, 4, 3)]]
    large = [triton.Config({"BM": bm, "BN": bn, "BK": bk, "SPLIT_K": 1}, num_warps=w, num_stages=st)
             for bm, bn, bk, w, st in [(128, 128, 128, 8, 3), (128, 256, 128, 8, 3), (64, 128, 256, 4, 3),
                                       (128, 128, 256, 8, 3), (256, 128, 128, 8, 3)]]
    return small + mid + large


def _prune(configs, named_args, **kwargs):
    """Keep tile heights that suit M (GEMV-like, batch-like or prefill) and tile widths that keep a
    tile inside one group (BN divides the group's rows, unless there is one group)."""
    m, n, ng = named_args["M"], named_args["N"], named_args["NG"]
    want = 16 if m <= 16 else 64 if m <= 64 else None
    keep = [c for c in configs if (c.kwargs["BM"] == want if want else c.kwargs["BM"] >= 64 and c.kwargs["SPLIT_K"] == 1)
            and (n == ng or ng % c.kwargs["BN"] == 0)]
    return keep or [c for c in configs if c.kwargs["BN"] == 16][:1]


@triton.autotune(configs=_configs(), key=["M", "N", "K"], prune_configs_by={"early_config_prune": _prune},
                 restore_value=["C"])
@triton.jit
def _packed_gemm_kernel(A, W, C, S, BETA, M, N, K, NG, stride_ag, stride_am, stride_sg, stride_wn, stride_cm,
                        ACCUMULATE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        SPLIT_K: tl.constexpr):
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    group = (pid_n * BN) // NG  # BN divides NG (the launcher checks), so a tile has one group
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BK // 4)
    a_base = A + group.to(tl.int64) * stride_ag + rm[:, None].to(tl.int64) * stride_am
    w_base = W + rn[None, :].to(tl.int64) * stride_wn
    kb = tl.cdiv(K, 4)
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    for k0 in range(pid_k * BK, K, BK * SPLIT_K):
        j = k0 // 4 + rj
        packed = tl.load(w_base + j[:, None], mask=(j[:, None] < kb) & (rn[None, :] < N), other=0x55)
        for p in tl.static_range(4):
            w = ((packed >> (2 * p)) & 3).to(tl.int8) - 1  # [BK/4, BN]; padding 0x55 = code 1 = weight 0
            k = k0 + 4 * rj + p
            a = tl.load(a_base + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K), other=0)
            acc = tl.dot(a, w, acc, out_dtype=tl.int32)
    s = tl.load(S + group.to(tl.int64) * stride_sg + rm, mask=rm < M, other=1.0)
    y = acc.to(tl.float32) * (tl.load(BETA + group) / s[:, None])
    c_ptr = C + rm[:, None].to(tl.int64) * stride_cm + rn[None, :]
    cmask = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE or SPLIT_K > 1:
        tl.atomic_add(c_ptr, y, mask=cmask, sem="relaxed")
    else:
        tl.store(c_ptr, y, mask=cmask)


def ternary_gemm_packed(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                        out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """Triton twin of `naive.ternary_gemm_naive` (same arguments); out is float32 [M, N]."""
    G, M, K = q.shape
    N = packed.shape[0]
    ng = N // G
    if G > 1 and ng % 16:
        raise ValueError(f"ternary_gemm: {ng} output rows per group is not a multiple of 16")
    if out is None:
        out = torch.empty(M, N, dtype=torch.float32, device=q.device)
    if not accumulate:
        out.zero_()  # split-K tiles add their parts atomically
    grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]), meta["SPLIT_K"])  # noqa: E731
    _packed_gemm_kernel[grid](q, packed, out, s, beta, M, N, K, ng, q.stride(0), q.stride(1), s.stride(0),
                              packed.stride(0), out.stride(0), ACCUMULATE=accumulate)
    return out
