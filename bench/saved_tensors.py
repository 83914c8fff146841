"""What each layer keeps for backward: every tensor autograd saves during one training forward of
HGRN-Bit, by module, with shape, dtype and bytes per token. A storage saved twice (by two ops, or
as views) counts once, under the module that saved it first; parameters are not counted.

The count covers activation checkpointing "none" (a checkpoint keeps its inputs outside autograd's
saved-tensor hooks). It runs anywhere: on a CPU with TRITON_INTERPRET=1 and --fused the Triton
training kernels run in the interpreter, so the GPU path's account comes out at small shapes; the
bytes per token of a layer depend on the shape (d, I), not on batch or sequence length.

    TRITON_INTERPRET=1 python -m bench.saved_tensors --fused --hidden 1024 --layers 1 --seq 64
    python -m bench.saved_tensors --preset 370m --batch 1 --seq 2048 --fused   # on a GPU
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from mmfree_cli.kernels import bitlinear as bl_pkg
from mmfree_cli.kernels import hgrn as hgrn_pkg
from mmfree_cli.model import HGRNBitForCausalLM, preset


def account(model: torch.nn.Module, ids: torch.Tensor, autocast: bool) -> list[dict]:
    """One forward with the loss under saved-tensor hooks → one row per distinct saved storage."""
    stack = ["(top)"]
    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: stack.append(n or "(model)")))
        handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, rows = set(), []

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen and storage.nbytes() > 0:
            seen.add(ptr)
            rows.append({"module": stack[-1], "shape": tuple(t.shape), "dtype": str(t.dtype).replace("torch.", ""),
                         "bytes": storage.nbytes()})
        return t

    device = ids.device.type
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        loss = model(ids, labels=ids).loss
    for h in handles:
        h.remove()
    loss.backward()
    return rows


def report(rows: list[dict], batch: int, seq: int, layers: int) -> tuple[float, float]:
    """Layer 0 tensor by tensor, then bytes per token per layer and in total → (bytes per token,
    fixed bytes): tensors without a token dimension (the fused head's dW) do not grow with tokens."""
    tokens = batch * seq
    fixed = sum(r["bytes"] for r in rows if not per_token(r["shape"], batch, seq))
    rows = [r for r in rows if per_token(r["shape"], batch, seq)]
    print(f"{'module':42} {'shape':22} {'dtype':9} {'B/token':>9}")
    for r in rows:
        if r["module"].startswith("model.layers.0.") or not r["module"].startswith("model.layers."):
            print(f"{r['module']:42} {str(r['shape']):22} {r['dtype']:9} {r['bytes'] / tokens:9.1f}")
    per_kind = defaultdict(float)
    for r in rows:
        per_kind[re.sub(r"layers\.\d+", "layers.*", r["module"])] += r["bytes"] / tokens
    layer_total = sum(v for k, v in per_kind.items() if k.startswith("model.layers.*")) / layers
    total = sum(per_kind.values())
    print(f"\nper layer: {layer_total:,.0f} B/token; whole model: {total:,.0f} B/token "
          f"({layers} layers; head, embedding and final norm {total - layer_total * layers:,.0f}); "
          f"plus {fixed / 1e6:.1f} MB not per token")
    return total, fixed


def per_token(shape: tuple, batch: int, seq: int) -> bool:
    return shape[:1] == (batch * seq,) or shape[:2] == (batch, seq) or (batch == 1 and shape[:1] == (seq,))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="370m")
    ap.add_argument("--hidden", type=int, default=None, help="override hidden_size (small CPU runs)")
    ap.add_argument("--layers", type=int, default=None, help="override num_hidden_layers")
    ap.add_argument("--vocab", type=int, default=None, help="override vocab_size (the interpreter is slow)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--policy", default="fp32-autocast", choices=["fp32-autocast", "bf16", "fp32"])
    ap.add_argument("--fused", action="store_true", help="the Triton training kernels (interpreted on a CPU)")
    ap.add_argument("--plan", type=str, default="8x2048", help="batch x seq to scale the total to (GB)")
    args = ap.parse_args()
    overrides = {k: v for k, v in (("hidden_size", args.hidden), ("num_hidden_layers", args.layers),
                                   ("vocab_size", args.vocab)) if v}
    config = preset(args.preset, **overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for pkg in (bl_pkg, hgrn_pkg):
        pkg.USE_TRITON = args.fused
        pkg.TRITON_ON_CPU = args.fused
        pkg.USE_CPU_TRAINING = False
    model = HGRNBitForCausalLM(config).to(device)
    if args.policy == "bf16":
        model = model.to(torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)
    rows = account(model, ids, autocast=args.policy != "fp32")
    print(f"{args.preset} (d {config.hidden_size}, I {config.intermediate_size}, V {config.vocab_size}), "
          f"{args.policy}, {'fused' if args.fused else 'PyTorch twin'} path, batch {args.batch} x {args.seq}")
    total, fixed = report(rows, args.batch, args.seq, config.num_hidden_layers)
    b, t = (int(v) for v in args.plan.split("x"))
    print(f"saved activations at {b} x {t}: {(total * b * t + fixed) / 1e9:.2f} GB (estimate: saved tensors only, "
          "without backward's transient buffers, the parameters, gradients or optimizer state)")


if __name__ == "__main__":
    main()
