"""The building blocks of HGRN-Bit: RMSNorm, BitLinear, the HGRN token mixer and the GLU channel mixer.

Module and parameter names match the reference checkpoint keys (docs/design.md §2), so a reference
state dict loads with no renaming.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..kernels.bitlinear import bitlinear, glu_bitlinear, rms_norm
from ..kernels.hgrn import hgrn_gated
from ..kernels.numerics import BITLINEAR_NORM_EPS

CHECKPOINTING = ("none", "selective", "full")
"""Activation checkpointing: none; selective recomputes each block's token mixer (norm, three
projections, scan, o_proj) in backward; full recomputes whole blocks."""


class RMSNorm(nn.Module):
    """y = x · rsqrt(mean(x²) + eps) · γ over the last dim."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class BitLinear(nn.Module):
    """RMSNorm (own gain, eps 1e-6) → int8 activations × ternary weights, no bias.

    With `ternary=False` the quantizers are off: a full-precision linear after the same RMSNorm,
    so a teacher or baseline has the same keys and shapes as the ternary model.
    """

    def __init__(self, in_features: int, out_features: int, ternary: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.ternary = in_features, out_features, ternary
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.norm = RMSNorm(in_features, eps=BITLINEAR_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bitlinear(x, self.norm.weight, self.weight, quantize=self.ternary)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, ternary={self.ternary}"


class HGRNBitAttention(nn.Module):
    """The token mixer: a gated element-wise linear recurrence, one head, d → d projections.

        f   = sigmoid(f_proj(x));  f = lb + (1 - lb)·f   (layers > 0: learned lower bound)
        i   = silu(i_proj(x)) · (1 - f)
        h_t = f_t ⊙ h_{t-1} + i_t
        out = o_proj(g_norm(g_proj(x)) ⊙ silu(h))     (the reference code's form, issue #37)

    Everything between the projections is one call (`hgrn_gated`): on GPU training one kernel
    family that keeps only the three projections' outputs for backward.
    """

    def __init__(self, hidden_size: int, eps: float, ternary: bool = True):
        super().__init__()
        d = hidden_size
        self.i_proj = BitLinear(d, d, ternary)
        self.f_proj = BitLinear(d, d, ternary)
        self.g_proj = BitLinear(d, d, ternary)
        self.o_proj = BitLinear(d, d, ternary)
        self.g_norm = RMSNorm(d, eps)

    def forward(self, x: torch.Tensor, lower_bound: torch.Tensor | None,
                state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, d]; lower_bound: [d] or None; state: [B, d] or None → (out [B, T, d], state [B, d])."""
        o, last = hgrn_gated(self.i_proj(x), self.f_proj(x), self.g_proj(x), lower_bound, self.g_norm.weight,
                             self.g_norm.eps, state)
        return self.o_proj(o), last


class HGRNBitMLP(nn.Module):
    """The channel mixer: a GLU. gate_proj: d → 2I (gate, up halves), down_proj: I → d."""

    def __init__(self, hidden_size: int, intermediate_size: int, ternary: bool = True):
        super().__init__()
        self.gate_proj = BitLinear(hidden_size, 2 * intermediate_size, ternary)
        self.down_proj = BitLinear(intermediate_size, hidden_size, ternary)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down_proj
        if not isinstance(d, BitLinear):  # frozen for inference (model/frozen.py): unfused
            gate, up = self.gate_proj(x).chunk(2, dim=-1)
            return d(F.silu(gate) * up)
        return glu_bitlinear(self.gate_proj(x), d.norm.weight, d.weight, d.ternary)


class HGRNBitBlock(nn.Module):
    """Pre-norm block: x += attn(attn_norm(x)); x += mlp(mlp_norm(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, eps: float, ternary: bool = True):
        super().__init__()
        self.attn_norm = RMSNorm(hidden_size, eps)
        self.attn = HGRNBitAttention(hidden_size, eps, ternary)
        self.mlp_norm = RMSNorm(hidden_size, eps)
        self.mlp = HGRNBitMLP(hidden_size, intermediate_size, ternary)
        self.checkpoint_mixer = False
        """True (selective checkpointing): the token mixer's activations are recomputed in backward."""

    def mix(self, x: torch.Tensor, lower_bound: torch.Tensor | None,
            state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn(self.attn_norm(x), lower_bound, state)

    def forward(self, x: torch.Tensor, lower_bound: torch.Tensor | None,
                state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.checkpoint_mixer and torch.is_grad_enabled():
            mixed, state = checkpoint(self.mix, x, lower_bound, state, use_reentrant=False)
        else:
            mixed, state = self.mix(x, lower_bound, state)
        x = x + mixed
        x = x + self.mlp(self.mlp_norm(x))
        return x, state
