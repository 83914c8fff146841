"""The onnx engine: an `mmfree export --target onnx` directory run by onnxruntime on the CPU.

Two sessions, made on first use: the prefill graph for prompts and the one-token decode graph.
The recurrent state is a list of onnxruntime `OrtValue`s, one [B, d] per layer: the
`present_state.{i}` outputs of one call are bound as the `state.{i}` inputs of the next through
an `IOBinding`, so the state stays in onnxruntime's memory between steps and is never copied
through numpy or torch (only the logits are handed out, as the Engine interface asks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import read_json
from ..formats.onnx import read_onnx_manifest
from ..model.config import HGRNBitConfig
from .base import Engine

State = list  # list[onnxruntime.OrtValue], one [B, d] float32 tensor per layer


class OnnxEngine(Engine):
    name = "onnx"

    def __init__(self, path: Path, manifest: dict, threads: int | None = None):
        from ..data.tokenizer import load_tokenizer
        self.path, self.manifest, self.threads = path, manifest, threads
        self.config = HGRNBitConfig.load(path)
        self.tokenizer = load_tokenizer(path, self.config.bos_token_id, self.config.eos_token_id)
        self.onnx_config = read_json(path / "onnx_config.json")
        self._sessions: dict = {}

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, verify: bool = True, **options) -> OnnxEngine:
        """Open an onnx export directory; `verify` checks every file against the manifest's sha256."""
        if options:
            raise UserError(f"the onnx engine does not take {', '.join(options)}")
        path = Path(path)
        manifest = read_onnx_manifest(path, check_files=verify)
        return cls(path, manifest, threads)

    def _session(self, kind: str):
        if kind not in self._sessions:
            import onnxruntime as ort
            options = ort.SessionOptions()
            if self.threads:
                options.intra_op_num_threads = self.threads
            # Idle worker threads sleep instead of spin-waiting: on a busy CPU the spinning threads
            # take cycles from the work (measured on a loaded 2-core machine, a 4-layer 370M-width
            # decode step: 32-39 ms spinning, 22-27 ms without).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if self.manifest.get("weights") == "dq":
                # ORT would fuse DequantizeLinear+MatMul into blockwise-int8 MatMulNBits, which is
                # not exact; without the fusion it folds the weights to float32 at load.
                options.add_session_config_entry("session.disable_quant_qdq", "1")
            graph = self.path / self.onnx_config["graphs"][kind]["file"]
            self._sessions[kind] = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        return self._sessions[kind]

    def new_state(self, batch_size: int) -> State:
        from onnxruntime import OrtValue
        zeros = np.zeros((batch_size, self.config.hidden_size), self.onnx_config.get("precision", "float32"))
        return [OrtValue.ortvalue_from_numpy(zeros.copy()) for _ in range(self.config.num_hidden_layers)]

    def run(self, kind: str, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Run graph `kind` ("prefill" or "decode") → (logits in the export's precision, state)."""
        ids = np.ascontiguousarray(tokens.detach().cpu().numpy().astype(np.int64))
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise UserError(f"token id out of range 0..{self.config.vocab_size - 1}: {ids.min()}..{ids.max()}")
        if len(state) != self.config.num_hidden_layers:
            raise ValueError(f"state has {len(state)} layers, the model {self.config.num_hidden_layers}")
        session = self._session(kind)
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        for layer, value in enumerate(state):
            binding.bind_ortvalue_input(f"state.{layer}", value)
        binding.bind_output("logits")
        for layer in range(self.config.num_hidden_layers):
            binding.bind_output(f"present_state.{layer}")  # onnxruntime allocates; we keep the OrtValue
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return torch.from_numpy(outputs[0].numpy()), list(outputs[1:])

    def prefill(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens [B, T] int64 → (logits [B, T, V] float32, state)."""
        if tokens.dim() != 2:
            raise ValueError(f"prefill takes tokens [B, T], got shape {tuple(tokens.shape)}")
        logits, state = self.run("prefill", tokens, state)
        return logits.to(torch.float32), state

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens [B] int64 → (logits [B, V] float32, state)."""
        if tokens.dim() != 1:
            raise ValueError(f"step takes tokens [B], got shape {tuple(tokens.shape)}")
        logits, state = self.run("decode", tokens, state)
        return logits.to(torch.float32), state

    def state_batch_select(self, state: State, index: list[int]) -> State:
        from onnxruntime import OrtValue
        return [OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[index])) for v in state]

    def state_concat(self, states: list[State]) -> State:
        from onnxruntime import OrtValue
        return [OrtValue.ortvalue_from_numpy(np.concatenate([s[layer].numpy() for s in states]))
                for layer in range(self.config.num_hidden_layers)]

    def describe(self) -> dict:
        import onnxruntime
        return {**super().describe(), "device": "cpu", "onnxruntime": onnxruntime.__version__,
                "weights": self.manifest.get("weights"), "threads": self.threads or "default"}
