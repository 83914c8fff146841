"""Batch-1 decode tokens/s of the onnx engine (both weight formats) beside the torch and cpu
engines, on the tiny model and on a 370M-shape model (random weights), CPU only.

Every engine is driven the same way, through `Engine.step` one token at a time (greedy, the
argmax fed back), after a short prefill; engines are measured one after the other in the same
run. The onnx figures settle which packed weight format the export uses by default (see
mmfree_cli/export/onnx/__init__.py): "nbits" (MatMulNBits 2-bit, int8 compute) or "dq"
(INT2 DequantizeLinear + MatMul, which onnxruntime folds to float32 at load).

    python -m bench.onnx_decode                       # tiny and 370m
    python -m bench.onnx_decode --shapes tiny --steps 64
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines import load_engine
from mmfree_cli.export import run_export
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained

ENGINES = ("onnx-nbits", "onnx-dq", "torch", "cpu")


def decode_times(engine, steps: int, repeats: int) -> list[float]:
    """Seconds per token of `steps` greedy decode steps, once per repeat (after one warm-up step)."""
    logits, state = engine.prefill(torch.tensor([[1, 2, 3, 4]]), engine.new_state(1))
    token = logits[:, -1].argmax(-1)
    logits, state = engine.step(token, state)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            token = logits.argmax(-1)
            logits, state = engine.step(token, state)
        out.append((time.perf_counter() - start) / steps)
    return out


def make_run(shape: str, directory: Path) -> Path:
    torch.manual_seed(0)
    save_pretrained(HGRNBitForCausalLM(preset(shape)).eval(), directory)
    ByteTokenizer().save(directory)  # the engines need a tokenizer; decode speed does not depend on it
    return directory


def open_engine(name: str, run: Path, root: Path):
    if name.startswith("onnx-"):
        fmt = name.split("-", 1)[1]
        out = root / f"onnx-{fmt}"
        if not out.exists():
            start = time.perf_counter()
            run_export("onnx", run, out, weights=fmt)
            print(f"  exported {fmt} in {time.perf_counter() - start:.1f} s", flush=True)
        return load_engine("onnx", out)
    return load_engine(name, run)


def bench_shape(shape: str, engines: list[str], steps: int, repeats: int, slow_steps: int) -> None:
    import onnxruntime
    with tempfile.TemporaryDirectory(prefix=f"onnx-bench-{shape}-") as tmp:
        run = make_run(shape, Path(tmp) / "run")
        cfg = preset(shape)
        medians = {}
        for name in engines:
            engine = open_engine(name, run, Path(tmp))
            n = steps if name.startswith("onnx") or shape == "tiny" else slow_steps
            times = decode_times(engine, n, repeats)
            medians[name] = 1 / statistics.median(times)
            notes = (f"{cfg.num_hidden_layers} layers x d={cfg.hidden_size}, V={cfg.vocab_size}, random weights, "
                     f"{n} steps x {repeats} repeats, default threads; onnxruntime {onnxruntime.__version__}, "
                     f"torch {torch.__version__}; shared 2-core machine, load average {os.getloadavg()[0]:.1f} "
                     "at start of the engine's run (other jobs running)")
            record(f"onnx_decode ({shape} shape, batch 1, CPU)", f"decode tokens/s, {name} engine",
                   [1 / t for t in times], "tokens/s", notes=notes)
            print(f"{shape:5s} {name:11s} {medians[name]:9.2f} tok/s", flush=True)
            del engine
            gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["tiny", "370m"])
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--steps", type=int, default=32, help="decode steps timed per repeat")
    ap.add_argument("--slow-steps", type=int, default=4, help="steps per repeat of torch/cpu at 370m")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    for shape in args.shapes:
        bench_shape(shape, args.engines, args.steps, args.repeats, args.slow_steps)


if __name__ == "__main__":
    main()
