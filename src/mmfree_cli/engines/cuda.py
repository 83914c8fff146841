"""The cuda engine: W1.58A8 inference with Triton kernels on an NVIDIA GPU.

Weights stay 2-bit packed on the GPU (`kernels/ternary_gemm`); the per-token work between the
products is fused into row kernels (`kernels/rowwise`) that end in the next product's int8 codes.
A layer is eight launches: [attn_norm → i/f/g norms + quant] → one GEMM for i, f and g → [gates +
recurrence + g_norm ⊙ silu(h) + o norm + quant] → o GEMM added into the residual → [mlp_norm →
gate norm + quant] → gate/up GEMM → [silu(gate)·up + down norm + quant] → down GEMM added into
the residual. Prefill runs the same kernels over all B·T tokens, with the chunked scan for the
recurrence. One token of one sequence (batch-1 decode) takes four launches a layer instead: GEMVs with
the row work fused into their prologues (`_decode_one`). One token of each of several sequences
(`decode_batch`) runs the batched kernels: row kernels writing planar int8 codes and a tensor-core
product with fixed tiles (`kernels/ternary_gemm/batched.py`), whose rows do not depend on the batch.
A decode step at a given batch size is captured once in a CUDA graph and replayed; `batched_decoder`
keeps many sequences' states in slots on the GPU and chooses their tokens there (`cuda_batch.py`).

State is float32 [L, B, d] on the GPU. The residual stream is float32; the embedding is bf16.
It loads a cuda export, a run directory or a `mmfree quantize` output (ternarised/packed on load).
On a machine without a GPU, `device="cpu"` runs the same code on the kernels' PyTorch twins (tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..model.config import HGRNBitConfig
from .base import Engine, State


@dataclass
class Projection:
    """G BitLinears sharing one input, stacked: packed codes [G·Ng, ceil(K/4)], β [G], gains [G, K]."""
    packed: torch.Tensor
    beta: torch.Tensor
    norms: torch.Tensor


@dataclass
class Layer:
    attn_norm: torch.Tensor
    ifg: Projection
    g_norm: torch.Tensor
    o: Projection
    mlp_norm: torch.Tensor
    gate: Projection
    down: Projection
    lower_bound: torch.Tensor | None


def _projection(t: dict[str, torch.Tensor], names: list[str], device) -> Projection:
    return Projection(packed=torch.cat([t[f"{n}.weight"] for n in names]).to(device).contiguous(),
                      beta=torch.cat([t[f"{n}.weight_beta"].float().reshape(1) for n in names]).to(device),
                      norms=torch.stack([t[f"{n}.norm.weight"].float() for n in names]).to(device))


def build_layers(config: HGRNBitConfig, t: dict[str, torch.Tensor], device) -> list[Layer]:
    """Per-layer device tensors from export tensors (checkpoint keys, `i2`-packed BitLinear weights)."""
    lbs: list[torch.Tensor | None] = [None] * config.num_hidden_layers
    if config.use_lower_bound:
        p = t["model.lower_bounds"].float().softmax(dim=0)
        lb = p.cumsum(dim=0) - p[0]  # as HGRNBitModel.layer_lower_bounds
        lbs = [None] + [lb[l].to(device) for l in range(1, config.num_hidden_layers)]
    layers = []
    for l in range(config.num_hidden_layers):
        pre = f"model.layers.{l}"
        layers.append(Layer(
            attn_norm=t[f"{pre}.attn_norm.weight"].float().to(device),
            ifg=_projection(t, [f"{pre}.attn.{k}_proj" for k in "ifg"], device),
            g_norm=t[f"{pre}.attn.g_norm.weight"].float().to(device),
            o=_projection(t, [f"{pre}.attn.o_proj"], device),
            mlp_norm=t[f"{pre}.mlp_norm.weight"].float().to(device),
            gate=_projection(t, [f"{pre}.mlp.gate_proj"], device),
            down=_projection(t, [f"{pre}.mlp.down_proj"], device),
            lower_bound=lbs[l]))
    return layers


BATCHED = True
"""Batched decode (B ≥ 2, T = 1) on the batched kernels; False: the prefill kernels (rowwise row
kernels and the autotuned GEMM), which bench/gpu_decode.py times as the baseline."""


class CudaEngine(Engine):
    name = "cuda"

    def __init__(self, config: HGRNBitConfig, tensors: dict[str, torch.Tensor], tokenizer,
                 device: str | torch.device = "cuda", cuda_graph: bool = True) -> None:
        self.config, self.tokenizer = config, tokenizer
        self.device = torch.device(device)
        self.embeddings = tensors["model.embeddings.weight"].to(self.device, torch.bfloat16)
        self.layers = build_layers(config, tensors, self.device)
        self.final_norm = tensors["model.norm.weight"].float().to(self.device)
        self.head = _projection(tensors, ["lm_head"], self.device)
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self._graphs: dict[int, tuple] = {}  # batch → (graph, tokens, state, logits, argmax)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, cuda_graph: bool = True,
             **_options: Any) -> CudaEngine:
        """Load a cuda export, run directory or packed model directory onto the GPU."""
        from ..data.tokenizer import load_tokenizer
        from ..fileio import read_json
        from ..formats.cuda import is_cuda_export, read_cuda_export, tensors_of
        from ..formats.ternary import open_ternary
        path = Path(path)
        device = device or "cuda"
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise UserError("the cuda engine needs an NVIDIA GPU and a CUDA build of torch — use --engine torch")
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no config.json — give a cuda export, run or model directory")
        if is_cuda_export(path):
            config_dict, tensors = read_cuda_export(path)
        else:
            config_dict, tensors = read_json(path / "config.json"), tensors_of(open_ternary(path))
        config = HGRNBitConfig.from_dict({k: v for k, v in config_dict.items() if k != "quantization_config"})
        tokenizer = load_tokenizer(path, bos_id=config.bos_token_id, eos_id=config.eos_token_id)
        return cls(config, tensors, tokenizer, device, cuda_graph)

    def new_state(self, batch_size: int) -> State:
        return torch.zeros(self.config.num_hidden_layers, batch_size, self.config.hidden_size,
                           dtype=torch.float32, device=self.device)

    def forward(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] on the device; state [L, B, d] updated in place → logits float32 [B·T, V]."""
        from ..kernels import rowwise
        from ..kernels.hgrn import hgrn_scan
        from ..kernels.ternary_gemm import ternary_gemm
        B, T = tokens.shape
        if B * T == 1:
            new_state = torch.empty_like(state)
            logits = self._decode_one(tokens, state, new_state)
            state.copy_(new_state)
            return logits
        if T == 1 and BATCHED:
            return self.decode_batch(tokens.reshape(B), state)
        d, eps = self.config.hidden_size, self.config.rms_norm_eps
        x = self.embeddings[tokens.reshape(-1)].float()  # the residual stream, [B·T, d]
        for l, layer in enumerate(self.layers):
            q, s = rowwise.norm_quant(x, layer.ifg.norms, layer.attn_norm, eps)
            y = ternary_gemm(q, s, layer.ifg.packed, layer.ifg.beta)  # [B·T, 3d]: i | f | g
            if T == 1:
                q, s = rowwise.hgrn_step(y, state[l], layer.lower_bound, layer.g_norm, layer.o.norms[0], eps)
            else:
                i, f = rowwise.hgrn_gates(y, layer.lower_bound)
                h, last = hgrn_scan(i.view(B, T, d), f.view(B, T, d), state[l])
                state[l].copy_(last)
                q, s = rowwise.hgrn_output(y, h.reshape(B * T, d), layer.g_norm, layer.o.norms[0], eps)
            ternary_gemm(q, s, layer.o.packed, layer.o.beta, out=x, accumulate=True)
            q, s = rowwise.norm_quant(x, layer.gate.norms, layer.mlp_norm, eps)
            y = ternary_gemm(q, s, layer.gate.packed, layer.gate.beta)
            q, s = rowwise.glu_quant(y, layer.down.norms[0])
            ternary_gemm(q, s, layer.down.packed, layer.down.beta, out=x, accumulate=True)
        q, s = rowwise.norm_quant(x, self.head.norms, self.final_norm, eps)
        return ternary_gemm(q, s, self.head.packed, self.head.beta)

    def _decode_one(self, tokens: torch.Tensor, state: torch.Tensor, new_state: torch.Tensor) -> torch.Tensor:
        """One token of one sequence: four fused GEMV launches a layer (norms, quantisation, recurrence
        and GLU run in the GEMVs' prologues; `kernels/ternary_gemm/decode.py`). state [L, 1, d] is read,
        new_state written (the recurrence's programs all read the old state) → logits [1, V]."""
        from ..kernels.ternary_gemm import gemv_glu, gemv_norm, gemv_step
        eps = self.config.rms_norm_eps
        x = self.embeddings[tokens.reshape(-1)].float()  # the residual stream, [1, d]
        for l, layer in enumerate(self.layers):
            y = gemv_norm(x, layer.attn_norm, eps, layer.ifg.norms, layer.ifg.packed, layer.ifg.beta)
            gemv_step(y, state[l, 0], new_state[l, 0], layer.lower_bound, layer.g_norm, eps, layer.o.norms[0],
                      layer.o.packed, layer.o.beta, out=x, accumulate=True)
            y = gemv_norm(x, layer.mlp_norm, eps, layer.gate.norms, layer.gate.packed, layer.gate.beta)
            gemv_glu(y, layer.down.norms[0], layer.down.packed, layer.down.beta, out=x, accumulate=True)
        return gemv_norm(x, self.final_norm, eps, self.head.norms, self.head.packed, self.head.beta)

    def decode_batch(self, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """One token for each of B sequences with the batched kernels (any B, 1 included): tokens [B] on
        the device, state [L, B, d] (each layer's rows contiguous) stepped in place → logits [B, V]."""
        from ..kernels.ternary_gemm import planar_gemm, rows_glu, rows_norm, rows_step
        eps = self.config.rms_norm_eps
        x = self.embeddings[tokens].float()  # the residual stream, [B, d]
        for l, layer in enumerate(self.layers):
            q, s = rows_norm(x, layer.attn_norm, eps, layer.ifg.norms)
            y = planar_gemm(q, s, layer.ifg.packed, layer.ifg.beta)
            q, s = rows_step(y, state[l], layer.lower_bound, layer.g_norm, layer.o.norms[0], eps)
            planar_gemm(q, s, layer.o.packed, layer.o.beta, out=x, accumulate=True)
            q, s = rows_norm(x, layer.mlp_norm, eps, layer.gate.norms)
            y = planar_gemm(q, s, layer.gate.packed, layer.gate.beta)
            q, s = rows_glu(y, layer.down.norms[0])
            planar_gemm(q, s, layer.down.packed, layer.down.beta, out=x, accumulate=True)
        q, s = rows_norm(x, self.final_norm, eps, self.head.norms)
        return planar_gemm(q, s, self.head.packed, self.head.beta)

    def batched_decoder(self, max_batch: int):
        """Slots for up to `max_batch` sequences decoding together, tokens chosen on the device (serving)."""
        from .cuda_batch import BatchedDecoder
        return BatchedDecoder(self, max_batch)

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        state = state.clone()
        logits = self.forward(tokens.to(self.device), state)
        return logits.view(*tokens.shape, -1).cpu(), state

    @torch.inference_mode()
    def prefill_last(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """As `prefill`, but only the last position's logits [B, V] come to the host. A one-token prompt
        runs the batched decode kernels at any B, so a row's result does not depend on the batch."""
        state = state.clone()
        tokens = tokens.to(self.device)
        if tokens.shape[1] == 1:
            logits = self.decode_batch(tokens[:, 0], state)
        else:
            logits = self.forward(tokens, state).view(*tokens.shape, -1)[:, -1]
        return logits.cpu(), state

    @torch.inference_mode()
    def step_device(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decode step, results left on the GPU: logits [B, V] and a new state."""
        if not self.use_graph:
            state = state.clone()
            return self.forward(tokens.to(self.device)[:, None], state), state
        graph, g_tokens, g_state, g_logits, _ = self._graph(tokens.shape[0])
        g_tokens.copy_(tokens)
        g_state.copy_(state)
        graph.replay()
        return g_logits, g_state.clone()

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.step_device(tokens, state)
        return logits.cpu(), state

    @torch.inference_mode()
    def step_greedy(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decode step whose next tokens (greedy argmax) are chosen on the device: only the ids
        [B] (int64, CPU) cross to the host, not the logits."""
        if not self.use_graph:
            logits, state = self.step_device(tokens, state)
            return logits.argmax(-1).cpu(), state
        graph, g_tokens, g_state, _, g_next = self._graph(tokens.shape[0])
        g_tokens.copy_(tokens)
        g_state.copy_(state)
        graph.replay()
        return g_next.cpu(), g_state.clone()

    def _graph(self, batch: int):
        """The decode step for `batch` sequences, captured once (after a warm-up that autotunes)."""
        if batch not in self._graphs:
            tokens = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
            state = self.new_state(batch)
            for _ in range(2):
                self.forward(tokens, state)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self.forward(tokens, state)
                chosen = logits.argmax(-1)  # for step_greedy; a few µs a step
            self._graphs[batch] = (graph, tokens.view(batch), state, logits, chosen)
        return self._graphs[batch]

    def state_batch_select(self, state: State, index: list[int]) -> State:
        return state[:, torch.as_tensor(index, dtype=torch.long, device=state.device)].clone()

    def state_concat(self, states: list[State]) -> State:
        return torch.cat(states, dim=1)

    def resident_bytes(self) -> int:
        """Bytes of model weights held on the device (packed codes, scales, gains, embedding)."""
        tensors = [self.embeddings, self.final_norm, self.head.packed, self.head.beta, self.head.norms]
        for layer in self.layers:
            tensors += [layer.attn_norm, layer.g_norm, layer.mlp_norm]
            tensors += [layer.lower_bound] if layer.lower_bound is not None else []
            for p in (layer.ifg, layer.o, layer.gate, layer.down):
                tensors += [p.packed, p.beta, p.norms]
        return sum(t.numel() * t.element_size() for t in tensors)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "weights": "i2 packed ternary, int8 activations",
                "cuda_graph": self.use_graph}
