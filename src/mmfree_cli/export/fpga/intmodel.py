"""The integer model of a model directory (a run, a reference checkpoint or a packed export).

Runs and checkpoints go through `quant.intspec.int_model_from_float`. Packed models carry their β:
their projections are rebuilt from the stored codes and β (never from mean|W| of already-ternary
weights, which would rescale the layer).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...quant.intspec import int_model_from_float, projection_constants


def _prefix(module_name: str) -> str:
    if module_name == "lm_head":
        return "lm_head"
    m = re.fullmatch(r"model\.layers\.(\d+)\.(?:attn|mlp)\.(\w+)_proj", module_name)
    if not m:
        raise ValueError(f"unexpected BitLinear {module_name}")
    return f"layers.{m.group(1)}.{m.group(2)}"


def load_int_model(model_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(integer model, reference config dict) of a model directory."""
    import torch

    from ...quant.load import DequantBitLinear, load_model
    model = load_model(model_dir)
    if not model.config.ternary:
        from ...errors import UserError
        raise UserError(f"{model_dir}: the model is not ternary (ternary: false) — the FPGA core runs "
                        "ternary models only")
    out = int_model_from_float(model)
    for name, mod in model.named_modules():
        if isinstance(mod, DequantBitLinear):
            beta = float(mod.beta)
            codes = torch.round(mod.weight.float() / mod.beta).clamp(-1, 1).to(torch.int8).numpy()
            gain = mod.norm.weight.detach().double().numpy()
            for k, v in projection_constants(codes, beta, gain).items():
                out[f"{_prefix(name)}.{k}"] = v
    return out, model.config.to_dict()
