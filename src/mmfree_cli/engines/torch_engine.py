"""The PyTorch engine: the model's own modules (fake-quantized BitLinear), on CPU or a torch device.

It is the reference every faster engine is compared with, and the one that runs a training run
directly (`runs/<name>/`: config.json + model.safetensors + tokenizer). State is the model's own
`[L, B, d]` tensor, one recurrent vector per layer and sequence.

A model loaded from disk gets its ternary weights quantized once (`model.frozen.FrozenBitLinear`)
instead of at every token as training's fake-quant does: the same W_q, computed once per weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .base import Engine, State

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float64": torch.float64}


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model, tokenizer) -> None:
        self.model = model  # not switched to eval(): a trainer's model stays as the trainer left it
        self.config = model.config
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @classmethod
    def from_model(cls, model, tokenizer) -> TorchEngine:
        """Wrap a model already in memory (e.g. at the end of training)."""
        return cls(model, tokenizer)

    @classmethod
    def load(cls, path: str | Path, dtype: str | torch.dtype | None = None,
             device: str | None = None, **_options: Any) -> TorchEngine:
        """Load a run, model or packed (`mmfree quantize`) directory.
        dtype: float32 (default) | bfloat16 | float16 | float64."""
        from ..data.tokenizer import load_tokenizer
        from ..formats.ternary import open_model
        from ..model.frozen import freeze_ternary_weights
        path = Path(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no config.json — give a run or model directory (e.g. runs/latest)")
        # packed directories load frozen, with their stored codes and β
        model = open_model(path, dtype=_dtype(dtype), device=device or "cpu")
        config = model.config
        if model.lm_head.weight.device.type == "cpu":  # on CUDA the fused kernel quantizes in-register
            freeze_ternary_weights(model)
        tokenizer = load_tokenizer(path, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
        return cls(model, tokenizer)

    def new_state(self, batch_size: int) -> State:
        return self.model.empty_state(batch_size)

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        out = self.model(tokens.to(self.device), state=state)
        return out.logits.float().cpu(), out.state

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.model.step(tokens.to(self.device), state)
        return logits.float().cpu(), state

    def state_batch_select(self, state: State, index: list[int]) -> State:
        return state[:, torch.as_tensor(index, dtype=torch.long, device=state.device)].clone()

    def state_concat(self, states: list[State]) -> State:
        return torch.cat(states, dim=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r} — choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]
