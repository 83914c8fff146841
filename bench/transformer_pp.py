"""A Llama-style Transformer++ baseline for bench/train_step.py: the architecture the MatMul-free
paper compares against, written here in plain PyTorch.

Pre-norm blocks of RMSNorm → causal self-attention (rotary position embeddings, PyTorch
`scaled_dot_product_attention`, which picks flash attention on the GPU) → residual, RMSNorm →
SwiGLU MLP → residual; final RMSNorm and an untied head. Sizes follow the HGRN-Bit presets (same
d, layers, vocabulary and intermediate size), so parameter counts match within a few percent.

    python bench/transformer_pp.py       # prints the parameter count of the 370m shape
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs of channels by position-dependent angles (RoPE). x: [B, H, T, hd]."""
    T, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    angles = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv)  # [T, hd/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, inner: int):
        super().__init__()
        self.heads = heads
        self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * inner, bias=False)
        self.down = nn.Linear(inner, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, d))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class TransformerPP(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, inner: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, inner) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x))
        if labels is None:
            return logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())


def like_hgrn(config, heads: int = 16) -> TransformerPP:
    """The Transformer++ of the same shape as an HGRNBitConfig."""
    return TransformerPP(config.vocab_size, config.hidden_size, config.num_hidden_layers, heads,
                         config.intermediate_size)


if __name__ == "__main__":
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from mmfree_cli.model.config import preset
    with torch.device("meta"):
        model = like_hgrn(preset("370m"))
    print(f"Transformer++ 370m shape: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
