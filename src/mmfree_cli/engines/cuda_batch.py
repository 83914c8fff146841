"""Many sequences decoding together on the GPU, for the server's continuous batching.

Each sequence owns a slot: a row of one recurrent-state buffer [L, max_batch, d], its next input
token, and its sampler settings (temperature, top-k/p, min-p, repetition penalty, seed and step
counter). The live sequences are kept in slots 0 … n−1 (`move` fills a freed slot from the end), so
a step runs the model on the first `bucket(n)` slots: one CUDA graph per bucket (1, 2, 4, … max_batch),
captured on first use, replayed after. The rows past n compute on stale slots and are ignored.

`step(n)` then chooses every live slot's next token on the device (`kernels/sampling.py`), writes
it as the slot's next input and returns the ids; the host copies only those. Because the batched
kernels give each row the same result whatever the batch (`kernels/ternary_gemm/batched.py`), a
sequence decodes to the same tokens alone or with 255 others.

Without a GPU (device="cpu", tests) the same code runs on the kernels' PyTorch twins, eagerly.
"""

from __future__ import annotations

import torch

from ..kernels.sampling import apply_penalty, choose_tokens


def buckets(max_batch: int) -> list[int]:
    """Batch sizes with a graph: powers of two below max_batch, and max_batch."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class BatchedDecoder:
    def __init__(self, engine, max_batch: int):
        self.engine, self.max_batch = engine, max_batch
        dev = self.device = engine.device
        self.state = engine.new_state(max_batch)
        self.tokens = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.temperature = torch.zeros(max_batch, device=dev)
        self.top_k = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.top_p = torch.ones(max_batch, device=dev)
        self.min_p = torch.zeros(max_batch, device=dev)
        self.penalty = torch.ones(max_batch, device=dev)
        self.seeds = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.counters = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.seen: torch.Tensor | None = None  # [max_batch, V] bool, made when a slot needs a penalty
        self.filtered = [False] * max_batch  # host copies: which extras a step needs
        self.penalised = [False] * max_batch
        self.buckets = buckets(max_batch)
        self.use_graph = engine.device.type == "cuda" and getattr(engine, "use_graph", True)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def put(self, slot: int, state: torch.Tensor, token: int, params, seen: list[int]) -> None:
        """Start slot `slot`: state [L, 1, d] after the prompt, its next input token, its sampler; `seen`
        are the tokens its repetition penalty counts (prompt and output so far). `params` is a
        generate.SamplingParams (not imported: engines sit below generate, docs/architecture.md)."""
        self.state[:, slot] = state[:, 0]
        self.tokens[slot] = token
        self.temperature[slot] = params.temperature
        self.top_k[slot], self.top_p[slot], self.min_p[slot] = params.top_k, params.top_p, params.min_p
        self.penalty[slot] = params.repetition_penalty
        self.seeds[slot], self.counters[slot] = params.seed % (1 << 62), 0
        self.filtered[slot] = params.temperature > 0 and (params.top_k > 0 or params.top_p < 1 or params.min_p > 0)
        self.penalised[slot] = params.repetition_penalty != 1.0
        if self.penalised[slot]:
            if self.seen is None:
                self.seen = torch.zeros(self.max_batch, self.engine.config.vocab_size, dtype=torch.bool,
                                        device=self.device)
            self.seen[slot] = False
            self.seen[slot, torch.as_tensor(sorted(set(seen)), dtype=torch.long, device=self.device)] = True

    def move(self, src: int, dst: int) -> None:
        """Slot src's sequence moves to slot dst (which is free)."""
        self.state[:, dst] = self.state[:, src]
        for t in (self.tokens, self.temperature, self.top_k, self.top_p, self.min_p, self.penalty, self.seeds,
                  self.counters):
            t[dst] = t[src]
        self.filtered[dst], self.penalised[dst] = self.filtered[src], self.penalised[src]
        if self.seen is not None:
            self.seen[dst] = self.seen[src]

    @torch.inference_mode()
    def logits(self, n: int) -> torch.Tensor:
        """Run the model one token on slots 0 … n−1 (states stepped in place) → logits [n, V] on the device."""
        b = self.bucket(n)
        if not self.use_graph:
            return self.engine.decode_batch(self.tokens[:b], self.state[:, :b])[:n]
        if b not in self._graphs:
            self._capture(b)
        graph, logits = self._graphs[b]
        graph.replay()
        return logits[:n]

    def _capture(self, b: int) -> None:
        """Capture the step for bucket b, after compiling its kernels on scratch buffers (a warm-up on the
        live slots would step their states)."""
        scratch = self.engine.new_state(b)
        self.engine.decode_batch(self.tokens[:b].clone(), scratch)
        torch.cuda.synchronize()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            logits = self.engine.decode_batch(self.tokens[:b], self.state[:, :b])
        self._graphs[b] = (graph, logits)

    def warm_up(self) -> None:
        """Capture every bucket's graph now (a server does this before taking requests)."""
        if self.use_graph:
            for b in self.buckets:
                if b not in self._graphs:
                    self._capture(b)

    @torch.inference_mode()
    def step(self, n: int) -> torch.Tensor:
        """One decode step of slots 0 … n−1: their next tokens [n] (int64, on the device), also written
        as their next inputs. Asynchronous: nothing waits for the device."""
        logits = self.logits(n)
        if any(self.penalised[:n]):
            logits = apply_penalty(logits, self.seen[:n], self.penalty[:n])
        filters = (self.top_k[:n], self.top_p[:n], self.min_p[:n]) if any(self.filtered[:n]) else (None,) * 3
        chosen = choose_tokens(logits, self.temperature[:n], self.seeds[:n], self.counters[:n], *filters)
        self.tokens[:n] = chosen
        if any(self.penalised[:n]):
            self.seen[torch.arange(n, device=self.device), chosen] = True
        return chosen
