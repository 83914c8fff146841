"""The FPGA engine (`--engine fpga --device /dev/xdma0`): decode steps on an mmfree card over XDMA.

The card runs one token of one sequence per START (hardware/regmap.py's protocol); the host
only looks up the embedding row and samples. Callers own the recurrent state (engines/base.py), so
each step writes that sequence's state to the card's STATE buffer and reads it back with the
logits: L·d·4 bytes each way, small next to the weights the card streams per token. The logits
are Q15.16 integers turned to float exactly as the cpu engine does (intspec.logits_to_float), so
both engines sample the same tokens from the same prompt and seed.

The card must already hold the bundle (`mmfree deploy`): load checks the design ID and reads the
weight image back against the manifest's block hashes before the first token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..quant import intspec
from .base import Engine, State


class FpgaEngine(Engine):
    name = "fpga"

    def __init__(self, config, tokenizer, bundle, card, xdma):
        self.config, self.tokenizer = config, tokenizer
        self.bundle, self.card, self.xdma = bundle, card, xdma
        self.embed = bundle.embed()

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, timeout: float = 10.0, wait: str = "irq",
             **_options: Any) -> FpgaEngine:
        from ..data.tokenizer import load_tokenizer
        from ..deploy.card import Card
        from ..deploy.xdma import Xdma
        from ..formats.fpga import Bundle
        from ..model import HGRNBitConfig
        if not device:
            raise UserError("--engine fpga needs --device, the XDMA node prefix (e.g. /dev/xdma0) — or mount "
                            "an emulated card: mmfree fpga-emulator start DIR")
        bundle = Bundle.open(path)
        config = HGRNBitConfig.from_dict(bundle.manifest["model"]["config"])
        tokenizer = load_tokenizer(path, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
        xdma = Xdma(device)
        try:
            card = Card(xdma, bundle.manifest, timeout=timeout, wait=wait)
            card.check_identity()
            bad = card.verify()
            if bad:
                raise UserError(f"{device}: the card does not hold this bundle's weights (block {bad[0]['name']} "
                                f"differs) — run `mmfree deploy {path} --device {device}` first")
            card.set_addresses()
        except BaseException:
            xdma.close()
            raise
        return cls(config, tokenizer, bundle, card, xdma)

    def new_state(self, batch_size: int) -> State:
        c = self.config
        return np.zeros((c.num_hidden_layers, batch_size, c.hidden_size), dtype=np.int32)

    def step_int(self, tokens, state: State) -> tuple[np.ndarray, State]:
        """One token per sequence → (logits int32 [B, V] Q15.16, new state int32 [L, B, d])."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size})")
        logits = np.empty((ids.size, self.config.vocab_size), dtype=np.int32)
        new = np.empty_like(state)
        for b, t in enumerate(ids):
            self.card.write_state(state[:, b])
            logits[b] = self.card.step(self.embed[t])
            new[:, b] = self.card.read_state()
        return logits, new

    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        ids = np.asarray(tokens, dtype=np.int64)
        out = np.empty((ids.shape[0], ids.shape[1], self.config.vocab_size), dtype=np.int32)
        for t in range(ids.shape[1]):
            out[:, t], state = self.step_int(ids[:, t], state)
        return torch.from_numpy(intspec.logits_to_float(out)), state

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.step_int(tokens, state)
        return torch.from_numpy(intspec.logits_to_float(logits)), state

    def state_batch_select(self, state: State, index: list[int]) -> State:
        return state[:, list(index)].copy()

    def state_concat(self, states: list[State]) -> State:
        return np.concatenate(states, axis=1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": f"fpga card at {self.xdma.prefix} (design {self.bundle.design_id})"}

    def close(self) -> None:
        self.xdma.close()
