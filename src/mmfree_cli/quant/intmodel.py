"""The one integer-model builder: a ternary model → the integer model of docs/integer-spec.md.

The ternary codes and β are taken as they are (`quant.ternary.TernaryModel`: the codes a run's
fake-quant forward uses, or a packed model's stored codes and β), never rebuilt from float weights;
only the gains, the embedding and the forget-gate floors are converted, once, from float. The CPU
engine, the FPGA compiler, the RTL golden vectors and the emulated card all run the result.
Names and formats of the result: `quant.intspec`'s module docstring.
"""

from __future__ import annotations

import numpy as np
import torch

from .intspec import embedding_q, gain_mantissas, lower_bound_q, projection_constants
from .ternary import TernaryModel, ternary_of_model

PROJECTIONS = {"i": "attn.i_proj", "f": "attn.f_proj", "g": "attn.g_proj", "o": "attn.o_proj",
               "gate": "mlp.gate_proj", "down": "mlp.down_proj"}
"""Integer-model projection name → the BitLinear it comes from, under model.layers.{l}."""


def int_model(ternary: TernaryModel) -> dict[str, np.ndarray]:
    """The integer model of `ternary` (a ternary HGRN-Bit model), names as in `quant.intspec`."""
    floats = ternary.floats

    def f64(name: str) -> np.ndarray:
        # float32 first: the precision the float model computes in (bf16 → f32 → f64 is exact)
        return floats[name].to(torch.float32).to(torch.float64).numpy()

    def put(prefix: str, module: str) -> None:
        codes = ternary.codes[f"{module}.weight"].to(torch.int8).numpy()
        beta = float(ternary.betas[f"{module}.weight"])
        for k, v in projection_constants(codes, beta, f64(f"{module}.norm.weight")).items():
            out[f"{prefix}.{k}"] = v

    layers, d = int(ternary.config["num_hidden_layers"]), int(ternary.config["hidden_size"])
    out: dict[str, np.ndarray] = {"embed": embedding_q(f64("model.embeddings.weight")),
                                  "final_gain": gain_mantissas(f64("model.norm.weight"))[0]}
    put("lm_head", "lm_head")
    for l, lb in enumerate(_lower_bounds(floats.get("model.lower_bounds"), layers)):
        p, m = f"layers.{l}", f"model.layers.{l}"
        out[f"{p}.attn_gain"] = gain_mantissas(f64(f"{m}.attn_norm.weight"))[0]
        out[f"{p}.g_gain"], g_shift = gain_mantissas(f64(f"{m}.attn.g_norm.weight"))
        out[f"{p}.g_gain_shift"] = np.array([g_shift], dtype=np.int64)
        out[f"{p}.mlp_gain"] = gain_mantissas(f64(f"{m}.mlp_norm.weight"))[0]
        out[f"{p}.lower_bound"] = lower_bound_q(np.zeros(d) if lb is None else lb)
        for name, module in PROJECTIONS.items():
            put(f"{p}.{name}", f"{m}.{module}")
    return out


def _lower_bounds(param: torch.Tensor | None, layers: int) -> list[np.ndarray | None]:
    from ..model.model import layer_lower_bounds
    with torch.no_grad():
        bounds = layer_lower_bounds(None if param is None else param.to(torch.float32), layers)
    return [None if lb is None else lb.to(torch.float64).numpy() for lb in bounds]


def int_model_from_float(model) -> dict[str, np.ndarray]:
    """The integer model of an HGRNBitForCausalLM in memory (a ternary config): its codes and β
    as `quant.ternary.ternary_layers` finds them, then `int_model`."""
    if not model.config.ternary:
        raise ValueError("int_model_from_float: the model is not ternary (config ternary=false)")
    return int_model(ternary_of_model(model))
