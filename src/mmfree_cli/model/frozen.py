"""The one inference BitLinear: fixed ternary codes and their stored β, no latent weight.

`FrozenBitLinear` computes RMSNorm (its own gain, eps `BITLINEAR_NORM_EPS`) → int8 fake-quant of
the activations → x @ (w·β)ᵀ, the forward of a training BitLinear whose weight has been
ternarised once. It serves both ways a model reaches inference in PyTorch: a packed model
(`formats.ternary.open_model`: codes and β as stored) and a run frozen for the torch engine
(`freeze_ternary_weights`: codes and β from `weight_scale` / `ternarize`, as the fake-quant forward
computes them). W = (codes·β) in β's precision, cast to the model dtype, is the fake-quant W_q
exactly (`kernels.bitlinear.quantize_weights`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.bitlinear import BITLINEAR_NORM_EPS, quantize_activations, rms_norm, ternarize, weight_scale
from .layers import BitLinear, RMSNorm


class FrozenBitLinear(nn.Module):
    """BitLinear with a fixed ternary weight: RMSNorm → int8 fake-quant activations → x @ (w·β)ᵀ."""

    def __init__(self, codes: torch.Tensor, beta: torch.Tensor, norm: RMSNorm, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.norm = norm
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("beta", beta.reshape(()))
        self.register_buffer("weight", (codes.to(beta.dtype) * self.beta).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = quantize_activations(rms_norm(x, self.norm.weight, BITLINEAR_NORM_EPS))
        return F.linear(xq, self.weight)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, beta={self.beta.item():.6g}"


@torch.no_grad()
def freeze_ternary_weights(model: nn.Module, codes: dict[str, torch.Tensor] | None = None,
                           betas: dict[str, torch.Tensor] | None = None) -> None:
    """Replace every ternary BitLinear of `model` in place by a FrozenBitLinear: with the given
    codes and β by weight key (a packed model), else ternarised from its own weight."""
    for name, module in list(model.named_modules()):
        if not (isinstance(module, BitLinear) and module.ternary):
            continue
        key = f"{name}.weight"
        if codes is not None and betas is not None:
            c, beta = codes[key], betas[key].to(torch.float32)
        else:
            beta = weight_scale(module.weight)
            c = ternarize(module.weight, beta)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FrozenBitLinear(c, beta, module.norm, module.weight.dtype))
