"""Triton GEMM/GEMV of int8 activations with 2-bit packed ternary weights, rescale fused.

The weights stay packed in memory (`i2`: byte j of a row holds codes of elements 4j..4j+3), so
a decode step reads 2 bits a weight. Two kernels:

- GEMV (one token, decode at batch 1): CUDA cores; a [BN, BK/4] byte tile splits into four
  planes of codes, plane p holding elements 4j + p, which meet the activations loaded with stride 4.
- GEMM (batched decode, prefill): int8 tensor cores; the byte tile is widened to [BN, BK] codes
  so one product covers the whole K tile; split-K adds partial tiles atomically.

Accumulation is exact (int32, or float32 on integers below 2^24); the epilogue applies β[g]/s[g, m]
and stores, or adds into the output (the residual stream, updated in place).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..interpret import interpreting as _interpreting


def _zero_output(nargs) -> None:
    """Split-K tiles add their parts atomically, so a stored (not accumulated) output starts at 0."""
    if not nargs["ACCUMULATE"]:
        nargs["C"].zero_()


def _gemm_configs():
    if _interpreting():
        return [triton.Config({"BM": 16, "BN": 16, "BK": 64, "SPLIT_K": 2}, num_warps=4, pre_hook=_zero_output)]
    # no split-K (SPLIT_K = 1): partial sums added atomically in a varying order would make a prompt's
    # logits depend on the timing, and serve.py's batched scheduler promises each request the tokens it
    # gets alone; batched decode has its own kernels (batched.py)
    batch = [(bm, bn, bk, 1, w, 4) for bm, bn, bk, w in
             [(16, 16, 128, 4), (16, 32, 256, 4), (16, 64, 256, 4), (64, 32, 256, 4), (64, 64, 256, 4),
              (64, 64, 128, 4), (64, 128, 128, 8)]]
    large = [(bm, bn, bk, 1, w, st) for bm, bn, bk, w, st in
             [(128, 128, 128, 8, 3), (128, 256, 64, 8, 3), (128, 128, 64, 4, 4), (64, 128, 128, 4, 4),
              (128, 256, 128, 8, 3)]]
    return [triton.Config({"BM": bm, "BN": bn, "BK": bk, "SPLIT_K": sk}, num_warps=w, num_stages=st,
                          pre_hook=_zero_output if sk > 1 else None) for bm, bn, bk, sk, w, st in batch + large]


def _prune(configs, named_args, **kwargs):
    """Keep tile heights that suit M (batch-like or prefill) and tile widths that keep a tile inside
    one group (BN divides the group's rows, unless there is one group)."""
    m, n, ng = named_args["M"], named_args["N"], named_args["NG"]
    fits = [c for c in configs if n == ng or ng % c.kwargs["BN"] == 0]
    if m <= 16:
        keep = [c for c in fits if c.kwargs["BM"] == 16]
    elif m <= 64:
        keep = [c for c in fits if c.kwargs["BM"] == 64 and c.kwargs["BN"] <= 128 and c.kwargs["BK"] >= 128]
    else:
        keep = [c for c in fits if c.kwargs["SPLIT_K"] == 1 and c.kwargs["BM"] >= 64]
    return keep or [min(fits or configs, key=lambda c: (c.kwargs["BN"], c.kwargs["BM"]))]


@triton.autotune(configs=_gemm_configs(), key=["M_KEY", "N", "K", "NG"],
                 prune_configs_by={"early_config_prune": _prune}, restore_value=["C"])
@triton.jit
def _packed_gemm_kernel(A, W, C, S, BETA, M, N, K, NG, stride_ag, stride_am, stride_sg, stride_wn, stride_cm, M_KEY,
                        ACCUMULATE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                        SPLIT_K: tl.constexpr):
    """Tensor cores: a [BN, BK/4] byte tile widens to [BN, BK] codes (byte j repeated 4 times, then
    shifted by 2·(k mod 4)), so the activations load as one contiguous [BM, BK] tile."""
    pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    group = (pid_n * BN) // NG  # BN divides NG (see _prune), so a tile has one group
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BK // 4)
    rk = tl.arange(0, BK)
    shifts = ((rk % 4) * 2).to(tl.uint8)
    a_base = A + group.to(tl.int64) * stride_ag + rm[:, None].to(tl.int64) * stride_am
    w_base = W + rn[:, None].to(tl.int64) * stride_wn
    kb = tl.cdiv(K, 4)
    acc = tl.zeros([BM, BN], dtype=tl.int32)
    for k0 in range(pid_k * BK, K, BK * SPLIT_K):
        j = k0 // 4 + rj
        packed = tl.load(w_base + j[None, :], mask=(rn[:, None] < N) & (j[None, :] < kb), other=0x55)
        wide = tl.reshape(tl.broadcast_to(packed[:, :, None], (BN, BK // 4, 4)), (BN, BK))
        w = ((wide >> shifts[None, :]) & 3).to(tl.int8) - 1  # padding 0x55 = code 1 = weight 0
        a = tl.load(a_base + (k0 + rk)[None, :], mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0)
        acc = tl.dot(a, tl.trans(w), acc, out_dtype=tl.int32)
    s = tl.load(S + group.to(tl.int64) * stride_sg + rm, mask=rm < M, other=1.0)
    y = acc.to(tl.float32) * (tl.load(BETA + group) / s[:, None])
    c_ptr = C + rm[:, None].to(tl.int64) * stride_cm + rn[None, :]
    cmask = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE or SPLIT_K > 1:
        tl.atomic_add(c_ptr, y, mask=cmask, sem="relaxed")
    else:
        tl.store(c_ptr, y, mask=cmask)


def _gemv_configs():
    if _interpreting():
        return [triton.Config({"BN": 16, "BK": 128}, num_warps=4)]
    return [triton.Config({"BN": bn, "BK": bk}, num_warps=w) for bn, bk, w in
            [(8, 2048, 4), (8, 1024, 4), (16, 1024, 4), (16, 2048, 8), (4, 2048, 4), (32, 512, 4),
             (2, 4096, 4), (4, 4096, 8), (8, 4096, 8), (4, 1024, 2), (2, 2048, 2)]]


def _prune_gemv(configs, named_args, **kwargs):
    n, ng = named_args["N"], named_args["NG"]
    return [c for c in configs if n == ng or ng % c.kwargs["BN"] == 0] or [min(configs, key=lambda c: c.kwargs["BN"])]


@triton.autotune(configs=_gemv_configs(), key=["N", "K", "NG"], prune_configs_by={"early_config_prune": _prune_gemv},
                 restore_value=["C"])
@triton.jit
def _packed_gemv_kernel(A, W, C, S, BETA, M, N, K, NG, stride_ag, stride_am, stride_sg, stride_wn, stride_cm,
                        ACCUMULATE: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """CUDA cores, one token (decode at batch 1): each program owns BN output rows, reads their bytes
    in a few wide coalesced tiles (many bytes in flight), multiplies element-wise into a
    [BN, BK/4] accumulator and reduces once at the end. Sums of ±q are integers below 2^24, so
    float32 keeps them exact."""
    pid_n = tl.program_id(0)
    group = (pid_n * BN) // NG
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BK // 4)
    a_base = A + group.to(tl.int64) * stride_ag
    w_base = W + rn[:, None].to(tl.int64) * stride_wn
    kb = tl.cdiv(K, 4)
    acc = tl.zeros([BN, BK // 4], dtype=tl.float32)
    for k0 in range(0, K, BK):
        j = k0 // 4 + rj
        packed = tl.load(w_base + j[None, :], mask=(rn[:, None] < N) & (j[None, :] < kb), other=0x55)
        for p in tl.static_range(4):
            k = 4 * j[None, :] + p  # element 4j + p of the row
            a = tl.load(a_base + k, mask=k < K, other=0).to(tl.float32)  # [1, BK/4]
            acc += (((packed >> (2 * p)) & 3).to(tl.float32) - 1.0) * a
    s = tl.load(S + group.to(tl.int64) * stride_sg)
    y = tl.sum(acc, axis=1) * (tl.load(BETA + group) / s)
    c_ptr = C + rn
    if ACCUMULATE:
        y += tl.load(c_ptr, mask=rn < N, other=0.0)
    tl.store(c_ptr, y, mask=rn < N)


GEMV_MAX_M = 1
"""Up to this many tokens the CUDA-core GEMV runs; beyond, the tensor-core GEMM."""


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
    args = (q, packed, out, s, beta, M, N, K, ng, q.stride(0), q.stride(1), s.stride(0), packed.stride(0),
            out.stride(0))
    if M <= GEMV_MAX_M:
        grid = lambda meta: (triton.cdiv(N, meta["BN"]),)  # noqa: E731
        _packed_gemv_kernel[grid](*args, ACCUMULATE=accumulate)
    elif M <= FIXED_MAX_M and not _interpreting():
        bm, bn, bk, warps, stages = next(t for m, t in FIXED_TILES if M <= m)
        while G > 1 and ng % bn:
            bn //= 2
        grid = (triton.cdiv(M, bm), triton.cdiv(N, bn), 1)
        _packed_gemm_kernel.fn[grid](*args, triton.next_power_of_2(M), ACCUMULATE=accumulate, BM=bm, BN=bn, BK=bk,
                                     SPLIT_K=1, num_warps=warps, num_stages=stages)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BM"]), triton.cdiv(N, meta["BN"]), meta["SPLIT_K"])  # noqa: E731
        _packed_gemm_kernel[grid](*args, triton.next_power_of_2(M), ACCUMULATE=accumulate)
    return out


FIXED_MAX_M = 256
FIXED_TILES = [(16, (16, 64, 256, 4, 4)), (64, (64, 64, 256, 4, 4)), (256, (64, 128, 128, 8, 4))]
"""Up to FIXED_MAX_M rows (a server's prompts read together) the GEMM runs these (BM, BN, BK, warps,
stages) by row count instead of autotuning: a server meets many row counts, and each new one stopped
it for seconds of tuning. Beyond, the autotuner's pick is kept per power of two of M (`M_KEY`)."""
