"""Batch-1 decode and prefill of the CPU integer engine on a 370M-shape model (random weights).

Measured in one run, on the same machine state:
- a streaming read bandwidth: a parallel numba sum over a buffer as large as the ternary weights
  one token reads (so the same cache level serves both), and over 1 GiB for reference;
- the integer engine's decode time per token, hence the fraction of the bandwidth bound it
  reaches: (weight bytes per token / time per token) / streaming bandwidth;
- the PyTorch float engine's decode time per token on the same model (weights quantized once,
  float32; the faster of torch's default threads and one thread), and the speed-up;
- prefill tokens/s of the integer engine (and of the torch engine) for one prompt of T tokens.

    python -m bench.cpu_decode                 # 370m shape, 24 layers
    python -m bench.cpu_decode --layers 4      # quicker, same widths
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from numba import njit, prange

from bench.record import record
from mmfree_cli.benchmark import timed
from mmfree_cli.engines.cpu_int import CompiledModel
from mmfree_cli.model import HGRNBitForCausalLM, preset
from mmfree_cli.model.frozen import freeze_ternary_weights
from mmfree_cli.quant.intmodel import int_model_from_float

# The streaming read runs on numba's OpenMP threads; by default they spin for a while after each
# read, on the cores the engine's decode (which alternates with it) then needs. Sleeping instead
# costs the read one wake-up (~30 µs of ~6 ms). torch has its own OpenMP runtime, already loaded
# and configured by now, so its baseline is not affected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BENCH = "cpu_decode (integer engine, 370M shape, random weights, batch 1)"


@njit(parallel=True, cache=True)
def _stream_sum(words):
    chunks = 256
    per = words.shape[0] // chunks
    partial = np.zeros(chunks, dtype=np.uint64)
    for c in prange(chunks):
        s = np.uint64(0)
        for i in range(c * per, (c + 1) * per):
            s += words[i]
        partial[c] = s
    return partial.sum()


def stream_bandwidth(nbytes: int, repeats: int) -> list[float]:
    """GB/s of a parallel streaming read over `nbytes`, one figure per repeat."""
    words = np.ones(nbytes // 8, dtype=np.uint64)
    _stream_sum(words)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        _stream_sum(words)
        out.append(words.nbytes / (time.perf_counter() - t) / 1e9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--steps", type=int, default=16, help="decode steps timed per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=64, help="prompt length for the prefill figure")
    ap.add_argument("--torch-steps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = preset("370m", num_hidden_layers=args.layers)
    model = HGRNBitForCausalLM(config).eval()
    compiled = CompiledModel(int_model_from_float(model))
    freeze_ternary_weights(model)
    weight_bytes = compiled.weight_bytes()
    load = os.getloadavg()[0]
    notes = (f"{args.layers} layers x d=1024, I=2816, V=32000, {compiled.kernel} kernel, "
             f"{compiled.threads}-thread team; 2-core VM, load average "
             f"{load:.1f} at start (no other jobs of ours running)")

    state = np.zeros((config.num_hidden_layers, 1, config.hidden_size), dtype=np.int32)
    compiled.forward(np.array([[1]]), state)  # compile / warm up
    words = np.ones(weight_bytes // 8, dtype=np.uint64)
    _stream_sum(words)
    # decode and the streaming read alternate, so both see the same load on a shared machine
    step_times, bw_same = [], []
    for _ in range(args.repeats):
        step_times.append(timed(lambda: _decode(compiled, state, args.steps), 1)[0] / args.steps)
        bw_same.append(words.nbytes / timed(lambda: _stream_sum(words), 1)[0] / 1e9)
    bw_dram = stream_bandwidth(1 << 30, 3)
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, args.prefill))
    prefill_times = timed(lambda: compiled.forward(prompt, state), max(2, args.repeats // 2))

    # torch is timed with its default threads and with one thread (its OpenMP workers stall on a
    # loaded machine); the faster setting is the baseline, so the speed-up is not flattered
    torch_step, torch_prefill, torch_threads = None, None, torch.get_num_threads()
    for threads in dict.fromkeys((torch.get_num_threads(), 1)):
        torch.set_num_threads(threads)
        with torch.no_grad():
            ids, tstate = torch.tensor([1]), model.empty_state(1)
            model.step(ids, tstate)
            step = timed(lambda ids=ids, tstate=tstate: model.step(ids, tstate), args.torch_steps)
            pre = timed(lambda: model(torch.from_numpy(prompt)), 2)
        if torch_step is None or statistics.median(step) < statistics.median(torch_step):
            torch_step, torch_prefill, torch_threads = step, pre, threads
    notes_torch = notes + f"; torch at {torch_threads} thread(s), the faster of default and 1"

    tps = [1 / t for t in step_times]
    fraction = [(weight_bytes / t) / 1e9 / bw for t, bw in zip(step_times, bw_same)]
    speedup = statistics.median(tps) * statistics.median(torch_step)
    record(BENCH, "weight bytes read per token", float(weight_bytes), "bytes", notes=notes)
    record(BENCH, "streaming read bandwidth (buffer = weight bytes)", bw_same, "GB/s", notes=notes)
    record(BENCH, "streaming read bandwidth (1 GiB buffer)", bw_dram, "GB/s", notes=notes)
    record(BENCH, "decode tokens/s, integer engine", tps, "tokens/s", notes=notes)
    record(BENCH, "fraction of the bandwidth bound", fraction, "ratio", target=">= 0.60",
           met=statistics.median(fraction) >= 0.6, notes=notes + "; bound = bytes per token / streaming bandwidth")
    record(BENCH, "decode tokens/s, torch float engine", [1 / t for t in torch_step], "tokens/s", notes=notes_torch)
    record(BENCH, "decode speed-up over the torch float engine", speedup, "x", target=">= 5",
           met=speedup >= 5, notes=notes_torch)
    record(BENCH, f"prefill tokens/s, integer engine (T={args.prefill})",
           [args.prefill / t for t in prefill_times], "tokens/s", notes=notes)
    record(BENCH, f"prefill tokens/s, torch float engine (T={args.prefill})",
           [args.prefill / t for t in torch_prefill], "tokens/s", notes=notes_torch)
    print(f"decode {statistics.median(tps):.1f} tok/s ({statistics.median(fraction):.2f} of the bound at "
          f"{statistics.median(bw_same):.1f} GB/s), torch {1 / statistics.median(torch_step):.2f} tok/s "
          f"(x{speedup:.1f}), prefill {args.prefill / statistics.median(prefill_times):.1f} tok/s")


def _decode(compiled: CompiledModel, state: np.ndarray, steps: int) -> None:
    tok = np.array([[1]])
    for _ in range(steps):
        logits, state = compiled.forward(tok, state)
        tok = logits[:, -1].argmax(-1)[:, None]


if __name__ == "__main__":
    main()
