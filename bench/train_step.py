"""Training step on a GPU: tokens/s and peak memory of mmfree's fused path, a Llama-style
Transformer++ of the same shape (bench/transformer_pp.py) and, when its code is given, the paper's
reference implementation, in one process, under two precision policies:

    bf16            parameters, gradients and Adam state in bfloat16 (autocast on as well)
    fp32-autocast   float32 parameters and Adam state, bfloat16 autocast

One step = forward, loss, backward, fused AdamW, on the same random batch for every model. Per
(model, policy, checkpointing): the median tokens/s over --steps timed steps after 2 warm-ups,
with min..max, and the peak of torch.cuda.max_memory_allocated over the timed steps (weights,
gradients and Adam state included; "activation memory" is the peak minus what was held before).

    python -m bench.train_step                                   # 370m, batch 8 x 2048, both policies
    python -m bench.train_step --checkpointing none,selective,full --models mmfree
    python -m bench.train_step --preset 2.7b --batch 4 --policies fp32-autocast --models mmfree \\
        --checkpointing selective
    python -m bench.train_step --reference-dir path/to/matmulfreellm   # adds the paper's code
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
from mmfree_cli.model import HGRNBitForCausalLM, preset

TARGETS = {  # (peak / Transformer++ at most, tokens/s / Transformer++ at least): issue 24
    "bf16": (0.56, 1.0), "fp32-autocast": (0.65, 1.0)}
BIG_TARGETS = {"2.7b": (60.0, 23357.0)}
"""Absolute targets (peak GB at most, tokens/s at least) for fp32-autocast at batch 4 x 2048."""


def versions() -> str:
    import triton
    return (f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}; "
            f"{torch.cuda.get_device_name(0)}")


def build(model: str, name: str, policy: str, checkpointing: str) -> torch.nn.Module:
    config = preset(name)
    with torch.device("cuda"):  # built on the GPU: a 2.7B model initialised on the CPU takes minutes
        return _build(model, config, policy, checkpointing)


def _build(model: str, config, policy: str, checkpointing: str) -> torch.nn.Module:
    if model == "transformer++":
        net = like_hgrn(config)
    elif model == "reference":
        from mmfreelm.models import HGRNBitConfig as RefConfig
        from mmfreelm.models import HGRNBitForCausalLM as RefModel
        net = RefModel(RefConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                                 num_hidden_layers=config.num_hidden_layers,
                                 intermediate_size=config.intermediate_size, use_cache=False))
    else:
        net = HGRNBitForCausalLM(config)
        net.set_activation_checkpointing(checkpointing)
    return net.to(torch.bfloat16) if policy == "bf16" else net


def loss_of(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.loss


def measure(model: str, policy: str, checkpointing: str, args) -> dict:
    """tokens/s per timed step, peak and activation memory (GB) of one configuration."""
    torch.manual_seed(0)
    net = build(model, args.preset, policy, checkpointing)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    vocab = preset(args.preset).vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_of(net(ids, labels=ids))
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
    for _ in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        rates.append(args.batch * args.seq / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated()
    if args.profile and model == "mmfree":
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.profile), flush=True)
    return {"rates": rates, "peak_gb": peak / 1e9, "act_gb": (peak - held) / 1e9, "loss": float(loss.detach())}


def release() -> None:
    """Give the last model's memory back before the next one is built."""
    gc.collect()
    torch.cuda.empty_cache()


def label(model: str, policy: str, checkpointing: str) -> str:
    extra = f", checkpointing {checkpointing}" if model == "mmfree" else ""
    return f"{model}, {policy}{extra}"


def run_all(args, notes: str) -> dict:
    results = {}
    for policy in args.policies.split(","):
        for model in args.models.split(","):
            for ckpt in (args.checkpointing.split(",") if model == "mmfree" else ["none"]):
                key = (model, policy, ckpt)
                try:
                    results[key] = r = measure(model, policy, ckpt, args)
                except Exception as e:  # noqa: BLE001 — one model failing (OOM, the reference's Triton) must not end the run
                    print(f"{label(*key)}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                    continue
                finally:
                    release()
                name = label(*key)
                print(f"{name}: {statistics.median(r['rates']):.0f} tok/s ({min(r['rates']):.0f}.."
                      f"{max(r['rates']):.0f}), peak {r['peak_gb']:.2f} GB (activations {r['act_gb']:.2f} GB), "
                      f"loss {r['loss']:.3f}", flush=True)
                record(args.bench, f"tokens/s [{name}]", r["rates"], "tok/s", notes=notes)
                record(args.bench, f"peak memory [{name}]", r["peak_gb"], "GB", notes=notes)
                record(args.bench, f"activation memory [{name}]", r["act_gb"], "GB", notes=notes)
    return results


def compare(results: dict, args, notes: str) -> None:
    """The issue-24 targets: each mmfree setting against Transformer++ (and the reference) of its policy."""
    med = {k: statistics.median(r["rates"]) for k, r in results.items()}
    for (model, policy, ckpt), r in results.items():
        if model != "mmfree":
            continue
        name = label(model, policy, ckpt)
        base = ("transformer++", policy, "none")
        if base in results and policy in TARGETS:
            mem_t, speed_t = TARGETS[policy]
            ratio = r["peak_gb"] / results[base]["peak_gb"]
            record(args.bench, f"peak / Transformer++ [{name}]", ratio, "x", f"<= {mem_t}", ratio <= mem_t, notes)
            speed = med[(model, policy, ckpt)] / med[base]
            record(args.bench, f"tokens/s / Transformer++ [{name}]", speed, "x", f">= {speed_t}", speed >= speed_t, notes)
        ref = ("reference", policy, "none")
        if ref in results:
            ratio = r["peak_gb"] / results[ref]["peak_gb"]
            record(args.bench, f"peak / reference [{name}]", ratio, "x", "<= 0.75", ratio <= 0.75, notes)
            record(args.bench, f"tokens/s / reference [{name}]", med[(model, policy, ckpt)] / med[ref], "x", notes=notes)
        if args.preset in BIG_TARGETS and policy == "fp32-autocast" and args.batch == 4:
            mem_t, speed_t = BIG_TARGETS[args.preset]
            record(args.bench, f"peak GB vs target [{name}]", r["peak_gb"], "GB", f"<= {mem_t}", r["peak_gb"] <= mem_t, notes)
            record(args.bench, f"tokens/s vs target [{name}]", r["rates"], "tok/s", f">= {speed_t:.0f}",
                   med[(model, policy, ckpt)] >= speed_t, notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (the median and min..max are recorded)")
    ap.add_argument("--preset", default="370m")
    ap.add_argument("--policies", default="bf16,fp32-autocast")
    ap.add_argument("--models", default="mmfree,transformer++,reference")
    ap.add_argument("--checkpointing", default="none", help="mmfree settings to run: none,selective,full")
    ap.add_argument("--reference-dir", default=None, help="a checkout of the paper's code (ridgerchu/matmulfreellm)")
    ap.add_argument("--profile", type=int, default=0, help="print the N costliest kernels of one mmfree step")
    ap.add_argument("--note", default="", help="appended to every row's notes")
    args = ap.parse_args()
    args.bench = f"train_step_{args.preset}"
    if args.reference_dir:
        sys.path.insert(0, str(Path(args.reference_dir).resolve()))
    elif "reference" in args.models:
        args.models = ",".join(m for m in args.models.split(",") if m != "reference")
    notes = (f"batch {args.batch} x seq {args.seq}, fused AdamW, random tokens, {args.steps} timed steps after 2 "
             f"warm-ups, all models in one process; {versions()}" + (f"; {args.note}" if args.note else ""))
    results = run_all(args, notes)
    compare(results, args, notes)


if __name__ == "__main__":
    main()
