"""The ternary LM head fused with cross-entropy, for training on GPU: the summed token loss of
`F.cross_entropy(bitlinear_naive(x, γ, W).float(), targets, reduction="sum")` without the B×T×V
logits ever existing whole.

Rows go through in chunks of about `CHUNK_BYTES` of float32 logits. For each chunk the forward
computes the logits (int8 GEMM, float32 out), their log-sum-exp and loss, and, when gradients are
wanted, right away the gradient dlogits = softmax − onehot and from it dx (norm backward kernel),
dγ and dW; the chunk's logits are then dropped. Backward only scales those stored gradients by the
incoming one (the loss is a scalar, so that is exact). Targets equal to `ignore_index` add nothing.
"""

from __future__ import annotations

import torch

from .fused import MODE_INT8, _compute_dtype, _weight_scale, int8_ternary_gemm, norm_backward, norm_quant, ternary_codes

CHUNK_BYTES = 1 << 28
"""float32 logits per chunk (256 MiB: 2,048 rows at a 32,000-token vocabulary)."""


def _chunk_rows(m: int, v: int) -> int:
    return max(1, min(m, CHUNK_BYTES // (4 * v)))


def _chunk_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, want_grad: bool, dtype):
    """Summed loss of one chunk; with want_grad also dlogits (softmax − onehot, 0 on ignored rows) in dtype."""
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, safe[:, None])[:, 0]
    loss = ((lse - picked) * valid).sum()
    if not want_grad:
        return loss, None
    probs = logits.sub_(lse[:, None]).exp_()  # in place: the chunk's logits are not needed after this
    probs.scatter_add_(1, safe[:, None], -torch.ones_like(picked)[:, None])
    probs.mul_(valid[:, None])
    return loss, probs.to(dtype)


class TernaryHeadCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_weight, weight, targets, ignore_index: int, want_grad: bool):
        dtype = _compute_dtype(x)
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        M, K = x2.shape
        V = weight.shape[0]
        beta = _weight_scale(weight)
        codes = ternary_codes(weight, beta, torch.int8)
        codes_f = ternary_codes(weight, beta, dtype) if want_grad else None
        t2 = targets.reshape(-1)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        dx = torch.empty_like(x2) if want_grad else None
        dw = torch.zeros(V, K, dtype=torch.float32, device=x.device) if want_grad else None
        dg = torch.zeros(K, dtype=torch.float32, device=x.device) if want_grad else None
        step = _chunk_rows(M, V)
        for a in range(0, M, step):
            xc = x2[a:a + step]
            q, s, rstd = norm_quant(xc, norm_weight, MODE_INT8, torch.int8)
            logits = int8_ternary_gemm(q, s, codes, beta, torch.float32)
            del q
            loss, dl = _chunk_loss(logits, t2[a:a + step], ignore_index, want_grad, dtype)
            del logits
            total += loss
            if want_grad:
                xq = torch.empty(xc.shape, dtype=dtype, device=x.device)
                dxc, dgc = norm_backward(xc, norm_weight, rstd, dl @ codes_f, beta, True, xq)
                dx[a:a + step] = dxc
                dg += dgc
                dw += dl.t() @ xq  # a bf16 product per chunk, summed in float32
        if want_grad:
            ctx.save_for_backward(dx, dg, dw)
            ctx.x_shape, ctx.dtypes = x.shape, (norm_weight.dtype, weight.dtype)
        return total

    @staticmethod
    def backward(ctx, dloss):
        dx, dg, dw = ctx.saved_tensors
        g_dtype, w_dtype = ctx.dtypes
        return ((dx * dloss.to(dx.dtype)).reshape(ctx.x_shape), (dg * dloss).to(g_dtype),
                (dw * dloss).to(w_dtype), None, None, None)


def head_ce_fused(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100) -> torch.Tensor:
    """Σ over rows of cross-entropy(BitLinear(x), target), float32 0-dim. x [..., K], targets [...]."""
    want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, norm_weight, weight))
    return TernaryHeadCE.apply(x, norm_weight, weight, targets, ignore_index, want_grad)


__all__ = ["head_ce_fused", "CHUNK_BYTES"]
