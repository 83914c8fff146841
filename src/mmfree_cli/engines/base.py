"""The one interface every inference engine answers (torch, cuda, cpu, onnx, fpga).

An engine holds a model and its tokenizer and runs it on recurrent state it does not keep itself:
callers own the state, so one engine serves many conversations. State is opaque (each engine picks
its own representation) except that `state_batch_select`/`state_concat` let callers split and join
batches, e.g. to reuse a system prompt's state or batch requests in a server.

    logits, state = engine.prefill(tokens, engine.new_state(B))   # tokens [B, T] → logits [B, T, V]
    logits, state = engine.step(next_tokens, state)               # tokens [B]    → logits [B, V]

Logits are float32 torch tensors on the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ..model.config import HGRNBitConfig

State = Any


class Engine(ABC):
    name: str = "?"
    config: HGRNBitConfig
    tokenizer: Any  # mmfree_cli.data.tokenizer.Tokenizer

    @abstractmethod
    def new_state(self, batch_size: int) -> State:
        """The all-zero recurrent state for `batch_size` sequences."""

    @abstractmethod
    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run tokens [B, T] (int64) from `state` → (logits [B, T, V] float32 CPU, new state)."""

    @abstractmethod
    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run one token per sequence, tokens [B] (int64) → (logits [B, V] float32 CPU, new state)."""

    @abstractmethod
    def state_batch_select(self, state: State, index: list[int]) -> State:
        """The state of the sequences at `index` (a copy), in that order."""

    @abstractmethod
    def state_concat(self, states: list[State]) -> State:
        """Join the states of several batches into one batch, in order."""

    def describe(self) -> dict[str, Any]:
        """A few facts for `--json` outputs and banners: engine name, device, model shape."""
        return {"engine": self.name, "hidden_size": self.config.hidden_size,
                "layers": self.config.num_hidden_layers, "vocab_size": self.config.vocab_size}
