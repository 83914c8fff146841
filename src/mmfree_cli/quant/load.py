"""Load a packed model back as an `HGRNBitForCausalLM` for inference (the dequantised PyTorch path).

Each BitLinear is replaced by a `DequantBitLinear` holding `W = w·β` with the stored β. The plain
BitLinear cannot be reused: its forward re-derives β = mean|W| from whatever weight it holds, and
for already-ternary weights that rescales the layer (reference issue #18). Activations are
fake-quantized by the same functions as the training forward, so logits match the fake-quant
model the codes came from.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels.bitlinear import BITLINEAR_NORM_EPS, quantize_activations, rms_norm
from ..kernels.bitlinear.naive import ste
from ..model import HGRNBitConfig, HGRNBitForCausalLM
from ..model.checkpoint import load_state_dict_strict
from ..model.layers import BitLinear, RMSNorm
from .packed import is_packed, read_packed


class DequantBitLinear(nn.Module):
    """BitLinear with a fixed ternary weight: RMSNorm → int8 fake-quant activations → x @ (w·β)ᵀ."""

    def __init__(self, codes: torch.Tensor, beta: torch.Tensor, norm: RMSNorm, dtype: torch.dtype):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.norm = norm
        self.register_buffer("beta", beta.to(torch.float32).reshape(()))
        # the fake-quant forward's W_q: codes·β in float32, then cast to the model dtype
        self.register_buffer("weight", (codes.to(torch.float32) * self.beta).to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xn = rms_norm(x, self.norm.weight, BITLINEAR_NORM_EPS)
        xn = ste(xn, quantize_activations(xn))  # same arithmetic as kernels.bitlinear.bitlinear_naive
        return F.linear(xn, self.weight)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, beta={self.beta.item():.6g}"


def load_packed_model(path: str | Path, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> HGRNBitForCausalLM:
    """A packed model directory → an eval-mode HGRNBitForCausalLM with dequantised BitLinears."""
    packed = read_packed(path)
    config = HGRNBitConfig.from_dict(packed.config)
    model = HGRNBitForCausalLM(config, init=False).to(dtype)
    # load the float tensors and norms first; ternary weights are checked against the layers below
    placeholders = {k: torch.zeros(()).expand(v.shape) for k, v in packed.codes.items()}
    load_state_dict_strict(model, {**packed.floats, **placeholders}, str(path))
    for name, module in list(model.named_modules()):
        if isinstance(module, BitLinear):
            key = f"{name}.weight"
            _replace(model, name, DequantBitLinear(packed.codes[key], packed.betas[key], module.norm, dtype))
    return model.to(device).eval()


def load_model(path: str | Path, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> HGRNBitForCausalLM:
    """Any model directory: packed (dequantised) or latent weights (run, reference checkpoint)."""
    if is_packed(path):
        return load_packed_model(path, dtype, device)
    from ..model import from_pretrained
    return from_pretrained(path, dtype, device)


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
