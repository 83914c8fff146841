"""The ternary hand-off: any model directory → one ternary model (codes, β, gains, float parts).

`open_ternary(path)` reads a run, a reference checkpoint (latent weights, ternarised here with the
fake-quant forward's own `weight_scale` / `ternarize`) or a packed directory (codes and β as
stored, never re-ternarised). Every exporter starts from it, and the integer model is built from
its codes (`quant.intmodel.int_model`). `open_model(path)` gives the same directory as a PyTorch
model for inference: packed projections become `FrozenBitLinear`s holding the stored codes and β.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import read_json
from ..quant.ternary import TernaryModel, ternary_of_model
from .packed import is_packed, read_packed
from .run import check_run


def open_ternary(path: str | Path) -> TernaryModel:
    """Codes, β and float tensors of a run, reference checkpoint or packed directory."""
    path = Path(path)
    if is_packed(path):
        return read_packed(path)
    check_run(path)
    from ..model import from_pretrained
    model = from_pretrained(path)  # float32: the precision β and the codes are defined in
    if not model.config.ternary:
        raise UserError(f"{path}: the model is not ternary (ternary: false in config.json, a full-precision "
                        "model) — give a ternary run, reference checkpoint or packed directory")
    return ternary_of_model(model, read_json(path / "config.json"))


def open_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """An eval-mode HGRNBitForCausalLM of any model directory: a packed one with its stored codes
    and β (`FrozenBitLinear`), a run or checkpoint with its latent weights."""
    path = Path(path)
    if is_packed(path):
        return model_of(read_packed(path), dtype, str(path)).to(device).eval()
    check_run(path)
    from ..model import from_pretrained
    return from_pretrained(path, dtype, device)


def model_of(ternary: TernaryModel, dtype: torch.dtype = torch.float32, source: str = "model"):
    """A ternary model as an HGRNBitForCausalLM whose projections are FrozenBitLinears."""
    from ..model import HGRNBitConfig, HGRNBitForCausalLM
    from ..model.checkpoint import load_state_dict_strict
    from ..model.frozen import freeze_ternary_weights
    config = HGRNBitConfig.from_dict(ternary.config)
    model = HGRNBitForCausalLM(config, init=False).to(dtype)
    # the float tensors and norms first; ternary weights are shape-checked as placeholders
    placeholders = {k: torch.zeros(()).expand(v.shape) for k, v in ternary.codes.items()}
    load_state_dict_strict(model, {**ternary.floats, **placeholders}, source)
    freeze_ternary_weights(model, ternary.codes, ternary.betas)
    return model
