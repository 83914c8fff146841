"""Choosing the next token of many sequences on the GPU, each with its own sampler settings, so only
token ids cross to the host.

    scores = logits (after the repetition penalty) / temperature, filtered (top-k, top-p, min-p: −inf)
    token  = argmax(logits)                       where temperature = 0 (greedy)
           = argmax(scores + Gumbel noise)        else (an exact draw from softmax(scores))

The filters follow `generate.choose_token` in order: top-k keeps the k most probable, top-p the
smallest set whose probability reaches top_p (the first always kept), min-p those with p ≥ min_p·p_max.
They need a sort of every row, so they run only when a row asks for one (`filter_scores`).

The noise is counter-based (Philox, `tl.rand`) from each sequence's seed and step counter, so a
sequence draws the same tokens whatever batch it is in. The PyTorch twin draws its noise from a
torch generator seeded the same way: same distribution, other numbers; greedy choices are equal.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_COUNTER_STRIDE = 1_000_003
"""seed + counter · this is a row's Philox key at a step (offsets are the vocabulary indices)."""


@triton.jit
def _choose_kernel(LOGITS, SCORES, TEMP, SEEDS, COUNTERS, OUT, V, stride_l, stride_s, COUNTER_STRIDE,
                   BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    sampled = tl.load(TEMP + row) > 0
    key = tl.load(SEEDS + row) + tl.load(COUNTERS + row) * COUNTER_STRIDE
    best = float("-inf")
    best_i = 0
    for v0 in range(0, V, BLOCK):
        v = v0 + tl.arange(0, BLOCK)
        mask = v < V
        if sampled:
            u = tl.rand(key, v)
            x = tl.load(SCORES + row * stride_s + v, mask=mask, other=float("-inf"))
            x = x - tl.log(-tl.log(tl.maximum(u, 1e-20)))
        else:
            x = tl.load(LOGITS + row * stride_l + v, mask=mask, other=float("-inf"))
        x = tl.where(mask, x, float("-inf"))
        m = tl.max(x, 0)
        i = tl.argmax(x, 0)
        if m > best:  # strictly greater: the first maximum wins, as torch.argmax
            best = m
            best_i = v0 + i
    tl.store(OUT + row, best_i.to(tl.int64))
    tl.store(COUNTERS + row, tl.load(COUNTERS + row) + 1)


def filter_scores(scores: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """scores [B, V] (already divided by temperature); per-row top_k (0 = off), top_p (1 = off), min_p
    (0 = off) → scores with the dropped tokens at −inf."""
    probs = torch.softmax(scores, dim=-1)
    sp, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(scores.shape[1], device=scores.device)
    k = torch.where(top_k > 0, top_k, scores.shape[1])
    sp = torch.where(rank[None, :] < k[:, None], sp, 0.0)
    before = sp.cumsum(-1) - sp
    drop = (before >= top_p[:, None] * sp.sum(-1, keepdim=True)) & (top_p[:, None] < 1)
    sp = torch.where(drop, 0.0, sp)
    sp = torch.where(sp >= min_p[:, None] * sp[:, :1], sp, 0.0)
    keep = torch.zeros_like(sp, dtype=torch.bool).scatter_(1, order, sp > 0)
    return torch.where(keep, scores, float("-inf"))


def apply_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """CTRL repetition penalty on tokens seen [B, V] (bool): positive logits divided, negative multiplied."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def choose_tokens(logits: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor, counters: torch.Tensor,
                  top_k: torch.Tensor | None = None, top_p: torch.Tensor | None = None,
                  min_p: torch.Tensor | None = None) -> torch.Tensor:
    """logits [B, V] float32; per-row temperature [B] (0 = greedy), seeds, counters [B] int64 (each row's
    counter is advanced by one) and optional filters → token ids [B] int64 on the logits' device."""
    scores = logits / torch.where(temperature > 0, temperature, 1.0)[:, None]
    if top_k is not None:
        scores = filter_scores(scores, top_k, top_p, min_p)
    if not logits.is_cuda:
        return choose_tokens_naive(logits, scores, temperature, seeds, counters)
    return choose_tokens_kernel(logits, scores, temperature, seeds, counters)


def choose_tokens_kernel(logits, scores, temperature, seeds, counters, block: int = 4096) -> torch.Tensor:
    """The Triton kernel on (logits, scores) as `choose_tokens` prepares them."""
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    _choose_kernel[(logits.shape[0],)](logits, scores, temperature, seeds, counters, out, logits.shape[1],
                                       logits.stride(0), scores.stride(0), _COUNTER_STRIDE, BLOCK=block,
                                       num_warps=8)
    return out


def choose_tokens_naive(logits, scores, temperature, seeds, counters) -> torch.Tensor:
    """Twin of the kernel: argmax for greedy rows, Gumbel-max with a generator seeded per row and step."""
    out = []
    for r in range(logits.shape[0]):
        if temperature[r] > 0:
            g = torch.Generator(device=logits.device).manual_seed(int(seeds[r] + counters[r] * _COUNTER_STRIDE))
            u = torch.rand(scores.shape[1], generator=g, device=logits.device).clamp(min=1e-20)
            out.append(int((scores[r] - torch.log(-torch.log(u))).argmax()))
        else:
            out.append(int(logits[r].argmax()))
    counters += 1
    return torch.tensor(out, dtype=torch.long, device=logits.device)
