"""The HGRN-Bit causal language model (Zhu et al. 2024, reference code ridger/MMfreeLM).

    tokens → embeddings → L × HGRNBitBlock → norm → lm_head (a BitLinear) → logits

No positional encoding and no KV cache: the only state carried between tokens is one [B, d]
vector per layer, stacked as `state: [L, B, d]`. `forward` runs a whole sequence with the parallel
scan; `step` runs one token with the same code at T = 1, the O(1) recurrent form used to decode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from ..kernels.bitlinear import head_cross_entropy
from .config import HGRNBitConfig
from .layers import CHECKPOINTING, BitLinear, HGRNBitBlock, RMSNorm

IGNORE_INDEX = -100


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None     # [B, T, V]; None when the fused head computed the loss without them
    state: torch.Tensor             # [L, B, d], the recurrent state after the last token
    loss: torch.Tensor | None = None


class HGRNBitModel(nn.Module):
    def __init__(self, config: HGRNBitConfig):
        super().__init__()
        c = config
        self.embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.lower_bounds = nn.Parameter(torch.zeros(c.num_hidden_layers, c.hidden_size)) if c.use_lower_bound else None
        self.layers = nn.ModuleList(HGRNBitBlock(c.hidden_size, c.intermediate_size, c.rms_norm_eps, c.ternary)
                                    for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.checkpoint_blocks = False
        """True (full activation checkpointing): each block is recomputed in backward."""

    def layer_lower_bounds(self) -> list[torch.Tensor | None]:
        """lb = cumsum(softmax(lower_bounds, 0)) - softmax(...)[0]: layer ℓ's floor on its forget gate
        (ℓ/L at init). Layer 0 has none."""
        return layer_lower_bounds(self.lower_bounds, len(self.layers))

    def forward(self, input_ids: torch.Tensor, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids: [B, T]; state: [L, B, d] or None → (hidden [B, T, d], state [L, B, d])."""
        x = self.embeddings(input_ids)
        if torch.is_autocast_enabled(x.device.type):  # the residual stream in the autocast dtype, not float32
            x = x.to(torch.get_autocast_dtype(x.device.type))
        new_state = []
        for l, (layer, lb) in enumerate(zip(self.layers, self.layer_lower_bounds())):
            s = None if state is None else state[l]
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x, s = checkpoint(layer, x, lb, s, use_reentrant=False)
            else:
                x, s = layer(x, lb, s)
            new_state.append(s)
        return self.norm(x), torch.stack(new_state)


class HGRNBitForCausalLM(nn.Module):
    def __init__(self, config: HGRNBitConfig, init: bool = True):
        super().__init__()
        self.config = config
        self.model = HGRNBitModel(config)
        self.lm_head = BitLinear(config.hidden_size, config.vocab_size, config.ternary)
        if init:  # False when weights are about to be loaded
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Mixer projections xavier-uniform (gain 2^-2.5); the rest normal(0, 0.02); down_proj / sqrt(2L)."""
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("lower_bounds"):
                p.zero_()
            elif any(f".attn.{k}_proj.weight" in name for k in "ifgo"):
                nn.init.xavier_uniform_(p, gain=2 ** -2.5)
            elif name.endswith("down_proj.weight"):
                p.normal_(0.0, std / math.sqrt(2 * self.config.num_hidden_layers))
            else:
                p.normal_(0.0, std)

    def set_activation_checkpointing(self, mode: str) -> None:
        """none | selective (recompute each block's token mixer) | full (recompute whole blocks)."""
        if mode not in CHECKPOINTING:
            raise UserError(f"activation checkpointing {mode!r} is not one of {', '.join(CHECKPOINTING)}")
        self.model.checkpoint_blocks = mode == "full"
        for layer in self.model.layers:
            layer.checkpoint_mixer = mode == "selective"

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                state: torch.Tensor | None = None, reduction: str = "mean") -> CausalLMOutput:
        """input_ids, labels: [B, T] (labels are shifted here; IGNORE_INDEX positions don't count).
        With labels on the GPU the head and the loss are one chunked kernel and `logits` is None;
        reduction: "mean" over counted positions or "sum"."""
        hidden, state = self.model(input_ids, state)
        h = self.lm_head
        if labels is not None and isinstance(h, BitLinear):  # a frozen (inference) head: plain path
            targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # position t predicts labels[t + 1]
            loss = head_cross_entropy(hidden, h.norm.weight, h.weight, targets, h.ternary, IGNORE_INDEX)
            if loss is not None:
                if reduction == "mean":
                    loss = loss / (targets != IGNORE_INDEX).sum().clamp(min=1)
                return CausalLMOutput(logits=None, state=state, loss=loss)
        logits = h(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE_INDEX, reduction=reduction)
        return CausalLMOutput(logits=logits, state=state, loss=loss)

    def step(self, input_ids: torch.Tensor, state: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step. input_ids: [B]; state: [L, B, d] or None → (logits [B, V], state)."""
        out = self.forward(input_ids[:, None], state=state)
        return out.logits[:, 0], out.state

    def empty_state(self, batch_size: int, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        p = self.lm_head.weight
        return torch.zeros(self.config.num_hidden_layers, batch_size, self.config.hidden_size,
                           dtype=dtype or p.dtype, device=device or p.device)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: 'ternary' (BitLinear weights), 'float' (everything else), 'total'."""
        ternary = sum(m.weight.numel() for m in self.modules() if isinstance(m, BitLinear))
        total = sum(p.numel() for p in self.parameters())
        return {"ternary": ternary, "float": total - ternary, "total": total}


def layer_lower_bounds(lower_bounds: torch.Tensor | None, layers: int) -> list[torch.Tensor | None]:
    """Each layer's forget-gate floor from the `lower_bounds` parameter [L, d] (see
    `HGRNBitModel.layer_lower_bounds`); also what the integer model is built from."""
    if lower_bounds is None:
        return [None] * layers
    p = lower_bounds.softmax(dim=0)
    lb = p.cumsum(dim=0) - p[0]
    return [None] + [lb[l] for l in range(1, layers)]
