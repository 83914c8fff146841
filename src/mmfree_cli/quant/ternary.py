"""The ternary model: what every target is built from (codes, β, gains and the float rest).

`TernaryModel` is the hand-off between the model files and the exporters: `formats.ternary.open_ternary`
makes one from any run, reference checkpoint or packed directory, and the cuda, cpu, onnx and FPGA
exporters and the integer-model builder (`quant.intmodel`) take it. The codes and β of a latent
weight come from the same `weight_scale` / `ternarize` the fake-quant forward uses; a packed
model's stored β is kept, never re-derived from its codes (reference issue #18: that rescales the
layer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..kernels.bitlinear import ternarize, weight_scale


@dataclass
class TernaryModel:
    """A model as quantization sees it: ternary codes with their β, and the float rest.

    `codes[name]` is int8 [N, K] of -1/0/+1 for the BitLinear weight `name` (a `...weight` key),
    `betas[name]` its float32 0-dim scale; `floats` holds every other tensor by checkpoint key
    (int8 rows dequantised to float32); `int8_rows[name]` the stored (codes, row scales) of such a
    tensor, reused as they are when it is packed as int8 again.
    """
    config: dict
    codes: dict[str, torch.Tensor]
    betas: dict[str, torch.Tensor]
    floats: dict[str, torch.Tensor]
    layout: str | None = None
    float_dtype: str = "float32"
    embedding_dtype: str | None = None
    manifest: dict = field(default_factory=dict)
    int8_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def ternary_layers(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{weight key: (int8 codes [N, K], 0-dim β)} of every ternary projection of an
    HGRNBitForCausalLM: a latent BitLinear is ternarised (β = weight_scale of its weight, float32, or
    float64 for a float64 model), a frozen one (`model.frozen.FrozenBitLinear`) gives its stored
    codes and β."""
    from ..model.frozen import FrozenBitLinear
    from ..model.layers import BitLinear
    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, FrozenBitLinear):
                out[f"{name}.weight"] = (module.codes, module.beta)
            elif isinstance(module, BitLinear):
                w = module.weight.detach()
                beta = weight_scale(w)
                out[f"{name}.weight"] = (ternarize(w, beta).to(torch.int8), beta)
    return out


def ternary_of_model(model, config: dict | None = None) -> TernaryModel:
    """The ternary model of an HGRNBitForCausalLM in memory (ternary config)."""
    layers = ternary_layers(model)
    floats = {k: v for k, v in model.state_dict().items()
              if k not in layers and not k.endswith((".codes", ".beta"))}
    return TernaryModel(config=config if config is not None else model.config.to_dict(),
                        codes={k: c for k, (c, _) in layers.items()},
                        betas={k: b for k, (_, b) in layers.items()}, floats=floats)
