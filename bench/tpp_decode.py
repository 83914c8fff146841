"""Decode speed of the bf16 Transformer++ baseline (bench/transformer_pp.py) with a static KV cache
and a CUDA-graph step: the strongest plain-PyTorch alternative to the cuda engine at the same shape.

The step feeds one token per sequence at position `context` of a cache allocated for `context + 1`
positions (attention over the whole cache, the masked tail included: static shapes for the graph).
Timings are of replays at that one position, so they include attention over `context` tokens.

    python bench/tpp_decode.py [--preset 1.3b] [--batch 1] [--context 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from bench.transformer_pp import like_hgrn


class CachedStep(torch.nn.Module):
    """One decode step of a TransformerPP over a static KV cache [layers, B, H, T, hd] (bf16)."""

    def __init__(self, model, batch: int, length: int):
        super().__init__()
        self.model = model
        block = model.blocks[0]
        d = model.embed.embedding_dim
        self.heads, self.hd = block.heads, d // block.heads
        shape = (len(model.blocks), batch, self.heads, length, self.hd)
        dev, dt = model.embed.weight.device, model.embed.weight.dtype
        self.k = torch.zeros(shape, device=dev, dtype=dt)
        self.v = torch.zeros(shape, device=dev, dtype=dt)
        self.pos = torch.zeros((), dtype=torch.long, device=dev)
        self.length = length

    def _rope(self, x):
        hd = x.shape[-1]
        inv = 1.0 / 10000.0 ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
        ang = self.pos.float() * inv
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def forward(self, tokens):
        B = tokens.shape[0]
        x = self.model.embed(tokens)[:, None]  # [B, 1, d]
        mask = (torch.arange(self.length, device=x.device) <= self.pos)[None, None, None]
        for l, blk in enumerate(self.model.blocks):
            q, k, v = blk.qkv(blk.attn_norm(x)).view(B, 1, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
            self.k[l].index_copy_(2, self.pos[None], self._rope(k))
            self.v[l].index_copy_(2, self.pos[None], v)
            a = F.scaled_dot_product_attention(self._rope(q), self.k[l], self.v[l], attn_mask=mask)
            x = x + blk.o(a.transpose(1, 2).reshape(B, 1, -1))
            gate, up = blk.gate_up(blk.mlp_norm(x)).chunk(2, dim=-1)
            x = x + blk.down(F.silu(gate) * up)
        return self.model.head(self.model.norm(x))[:, 0]


@torch.inference_mode()
def decode_rates(config, batch: int, steps: int = 100, context: int = 256, repeats: int = 3) -> list[float]:
    """tokens/s of graph-replayed steps at position `context` (random bf16 weights)."""
    torch.manual_seed(0)
    model = like_hgrn(config).to("cuda", torch.bfloat16).eval()
    step = CachedStep(model, batch, context + 1)
    step.pos.fill_(context)
    tokens = torch.randint(0, config.vocab_size, (batch,), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(tokens)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = step(tokens)
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            graph.replay()
        torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - t0))
    assert torch.isfinite(logits.float()).all()
    del graph, step, model
    torch.cuda.empty_cache()
    return rates


if __name__ == "__main__":
    from mmfree_cli.model import preset
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=256)
    a = ap.parse_args()
    print(sorted(decode_rates(preset(a.preset), a.batch, context=a.context)))
