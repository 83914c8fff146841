"""int8 activations × 2-bit packed ternary weights (W1.58A8 inference). `ternary_gemm` picks the
kernel by device: the Triton kernel (`packed.py`) for CUDA tensors, else the PyTorch twin.
`gemv_norm`, `gemv_step`, `gemv_glu`: one token's product with the work before it fused (`decode.py`).
`rows_norm`, `rows_step`, `rows_glu`, `planar_gemm`: a decode step of many sequences (`batched.py`)."""

from __future__ import annotations

import torch

from . import naive
from .naive import gemv_glu_naive, gemv_norm_naive, gemv_step_naive, ternary_gemm_naive, unpack_i2_codes

__all__ = ["ternary_gemm", "ternary_gemm_naive", "unpack_i2_codes", "gemv_norm", "gemv_step", "gemv_glu",
           "rows_norm", "rows_step", "rows_glu", "planar_gemm"]


def ternary_gemm(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                 out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """q int8 [G, M, K], s [G, M], packed uint8 [N, ceil(K/4)], β [G] → float32 [M, N] (see naive.py)."""
    if q.dim() != 3 or s.shape != q.shape[:2] or packed.shape[0] % q.shape[0] or beta.shape != (q.shape[0],):
        raise ValueError(f"ternary_gemm: shapes q {tuple(q.shape)}, s {tuple(s.shape)}, packed "
                         f"{tuple(packed.shape)}, beta {tuple(beta.shape)} do not fit")
    if q.is_cuda:
        from .packed import ternary_gemm_packed
        return ternary_gemm_packed(q, s, packed, beta, out, accumulate)
    return ternary_gemm_naive(q, s, packed, beta, out, accumulate)


def gemv_norm(x: torch.Tensor, pre: torch.Tensor, pre_eps: float, gains: torch.Tensor, packed: torch.Tensor,
              beta: torch.Tensor, out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """One token x [1, K]: rms_norm(pre) → G BitLinears (gains [G, K], packed [G·Ng, ceil(K/4)], β [G]) → [1, N]."""
    if not x.is_cuda:
        return gemv_norm_naive(x, pre, pre_eps, gains, packed, beta, out, accumulate)
    from .decode import MODE_NORM, decode_gemv
    return decode_gemv(MODE_NORM, x, pre, gains, packed, beta, x.shape[-1], pre_eps, out=out, accumulate=accumulate)


def gemv_step(y: torch.Tensor, h0: torch.Tensor, h1: torch.Tensor, lb: torch.Tensor | None, g_norm: torch.Tensor,
              eps: float, o_norm: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
              out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """One token y = [yi | yf | yg] [1, 3d]: recurrence step from state h0 [d] into h1 [d] (another buffer:
    every program reads h0), gate output, o_proj → [1, N]."""
    if not y.is_cuda:
        return gemv_step_naive(y, h0, h1, lb, g_norm, eps, o_norm, packed, beta, out, accumulate)
    from .decode import MODE_STEP, decode_gemv
    return decode_gemv(MODE_STEP, y, g_norm, o_norm[None], packed, beta, h0.shape[-1], eps, lb=lb, h0=h0, h1=h1,
                       out=out, accumulate=accumulate)


def gemv_glu(y: torch.Tensor, down_norm: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
             out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """One token y = [gate | up] [1, 2I]: silu(gate)·up → down_proj → [1, N]."""
    if not y.is_cuda:
        return gemv_glu_naive(y, down_norm, packed, beta, out, accumulate)
    from .decode import MODE_GLU, decode_gemv
    return decode_gemv(MODE_GLU, y, None, down_norm[None], packed, beta, y.shape[-1] // 2, out=out,
                       accumulate=accumulate)


def _batched(name: str, x: torch.Tensor):
    """The Triton kernel `name` of batched.py for CUDA tensors, else its twin `naive.<name>_naive`."""
    if x.is_cuda:
        from . import batched
        return getattr(batched, name)
    return getattr(naive, f"{name}_naive")


def rows_norm(x: torch.Tensor, pre: torch.Tensor | None, pre_eps: float, gains: torch.Tensor):
    """x [M, K] → planar int8 codes [G, M, 4·ceil(K/4)] and scales [G, M] of rms_norm(pre) → G BitLinear norms."""
    return _batched("rows_norm", x)(x, pre, pre_eps, gains)


def rows_step(y: torch.Tensor, state: torch.Tensor, lb: torch.Tensor | None, g_norm: torch.Tensor,
              o_norm: torch.Tensor, eps: float):
    """y = [yi | yf | yg] [M, 3d]; state [M, d] stepped in place → o_proj's planar codes and scales."""
    return _batched("rows_step", y)(y, state, lb, g_norm, o_norm, eps)


def rows_glu(y: torch.Tensor, down_norm: torch.Tensor):
    """y = [gate | up] [M, 2I] → down_proj's planar codes and scales."""
    return _batched("rows_glu", y)(y, down_norm)


def planar_gemm(q: torch.Tensor, s: torch.Tensor, packed: torch.Tensor, beta: torch.Tensor,
                out: torch.Tensor | None = None, accumulate: bool = False) -> torch.Tensor:
    """Planar codes q [G, M, 4·KB] × `i2` weights [G·Ng, KB] → float32 [M, N] (see batched.py)."""
    return _batched("planar_gemm", q)(q, s, packed, beta, out, accumulate)
