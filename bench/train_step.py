"""Training step of the 370M shape at sequence 2048 in bf16 autocast: tokens/s and peak memory for
the fused Triton path (int8 and float forward products), the PyTorch-twin path, and a Llama-style
Transformer++ of the same size (bench/transformer_pp.py). Needs a CUDA GPU.

One step = forward, loss, backward, fused AdamW. Same batch for every path. Peak memory is
torch.cuda.max_memory_allocated over the timed steps (weights, gradients and Adam state included;
the activation part, peak minus memory held before the step, is recorded too).

    python -m bench.train_step [--batch 8] [--seq 2048] [--steps 5] [--preset 370m]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.record` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from bench.transformer_pp import like_hgrn
from mmfree_cli.kernels import bitlinear as bitlinear_pkg
from mmfree_cli.kernels import hgrn as hgrn_pkg
from mmfree_cli.kernels.bitlinear import fused as bitlinear_fused
from mmfree_cli.model import HGRNBitForCausalLM, preset

BENCH = "train_step_370m"
PROFILE = False
"""--profile: print a kernel time table for one fused step (diagnostics, not recorded)."""


def versions() -> str:
    import triton
    return (f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}; "
            f"{torch.cuda.get_device_name(0)}")


def set_path(path: str) -> None:
    """Point the kernel dispatch at the path under test."""
    bitlinear_pkg.USE_TRITON = hgrn_pkg.USE_TRITON = path.startswith("fused")
    bitlinear_fused.FORWARD_MATMUL = "int8" if path == "fused-int8" else "float"


def measure(path: str, batch: int, seq: int, steps: int, name: str) -> dict:
    """tokens/s per timed step, peak and activation memory (GB) of one path."""
    set_path(path)
    torch.manual_seed(0)
    config = preset(name)
    model = (like_hgrn(config) if path == "transformer++" else HGRNBitForCausalLM(config)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids, labels=ids)
        loss = out if isinstance(out, torch.Tensor) else out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):  # warm-up: compiles and autotunes the kernels, allocates Adam state
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    held = torch.cuda.memory_allocated()
    rates = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        rates.append(batch * seq / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated()
    if PROFILE and path.startswith("fused"):
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18), flush=True)
    result = {"rates": rates, "peak_gb": peak / 1e9, "act_gb": (peak - held) / 1e9, "loss": float(loss.detach())}
    del model, opt, ids
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--preset", default="370m")
    ap.add_argument("--paths", default="fused-int8,fused-float,twin,transformer++")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    global PROFILE
    PROFILE = args.profile
    notes = f"batch {args.batch} x seq {args.seq}, bf16 autocast, fused AdamW, random tokens; {versions()}"
    results = {}
    for path in args.paths.split(","):
        try:
            results[path] = r = measure(path, args.batch, args.seq, args.steps, args.preset)
        except torch.OutOfMemoryError:
            print(f"{path}: out of memory at batch {args.batch}", flush=True)
            gc.collect()
            torch.cuda.empty_cache()
            continue
        print(f"{path}: {statistics.median(r['rates']):.0f} tok/s, peak {r['peak_gb']:.2f} GB "
              f"(activations {r['act_gb']:.2f} GB), loss {r['loss']:.3f}", flush=True)
        record(BENCH, f"tokens/s [{path}]", r["rates"], "tok/s", notes=notes)
        record(BENCH, f"peak memory [{path}]", r["peak_gb"], "GB", notes=notes)
        record(BENCH, f"activation memory [{path}]", r["act_gb"], "GB", notes=notes)
    compare(results, notes)


def compare(results: dict, notes: str) -> None:
    """The issue-7 targets, for the faster of the two fused variants."""
    med = {p: statistics.median(r["rates"]) for p, r in results.items()}
    fused = max((p for p in med if p.startswith("fused")), key=med.get, default=None)
    if fused is None:
        return
    if "twin" in results:
        ratio = results[fused]["peak_gb"] / results["twin"]["peak_gb"]
        record(BENCH, f"peak memory {fused} / twin", ratio, "x", "<= 0.5", ratio <= 0.5, notes)
        speed = med[fused] / med["twin"]
        record(BENCH, f"tokens/s {fused} / twin", speed, "x", ">= 1.3", speed >= 1.3, notes)
    if "transformer++" in results:
        speed = med[fused] / med["transformer++"]
        record(BENCH, f"tokens/s {fused} / Transformer++", speed, "x", ">= 0.9", speed >= 0.9, notes)


if __name__ == "__main__":
    main()
