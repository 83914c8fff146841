"""Batch-1 decode of the CPU integer engine on a 370M-shape model (or --shape), against the memory
bound and against llama.cpp's ternary types, in interleaved rounds.

Each round, on the same machine state (the load average is recorded before and after):
- the streaming-read bandwidth at 1 and 2 threads, before and after the engine (`bench.bandwidth`:
  best of numpy, torch and the engine's own thread team over a buffer 8x the last-level cache;
  the median of those reads is recorded beside it, since on a shared host the best is often a
  rare quiet moment);
- the engine's decode tokens/s at 1 and 2 threads, hence the fraction of the bound it reaches:
  (ternary weight bytes per token x tokens/s) / bound, the bound being the best reading of the
  whole run at that thread count; a fraction above 1 stops the run;
- llama.cpp's TQ2_0 and TQ1_0 at 1 and 2 threads (`bench.peer_llamacpp`: a Llama-shaped GGUF
  with the same 341,049,344 ternary weights), when llama-bench is installed;
then prefill tokens/s of the engine once. Rows are recorded per metric over the rounds (median,
min..max); a target counts as met only when every round meets it.

    python -m bench.cpu_decode                 # 370m shape, 3 rounds (~5 min on 2 cores)
    python -m bench.cpu_decode --layers 4 --rounds 1 --no-peer   # quick look
    python -m bench.cpu_decode --shape 2.7b    # a model larger than a big server's last-level cache
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from bench import bandwidth, peer_llamacpp
from bench.record import record
from mmfree_cli.benchmark import timed
from mmfree_cli.engines.cpu_int import CompiledModel
from mmfree_cli.model import HGRNBitForCausalLM, preset
from mmfree_cli.quant.intmodel import int_model_from_float

BENCH = "cpu_decode (integer engine against the memory bound and llama.cpp, {shape} shape, batch 1)"
THREADS = (1, 2)
FRACTION_TARGET, PEER_TARGET = 0.50, 1.5
SHAPES = ("370m", "1.3b", "2.7b")  # the released checkpoints' shapes (model/presets.yaml)


def random_int_model(shape: str, layers: int | None = None) -> tuple:
    """(config, integer model) of a random float model of the preset `shape` (seed 0)."""
    torch.manual_seed(0)
    config = preset(shape, **({} if layers is None else {"num_hidden_layers": layers}))
    return config, int_model_from_float(HGRNBitForCausalLM(config).eval())


def _decode(compiled: CompiledModel, state: np.ndarray, steps: int) -> None:
    tok = np.array([[1]])
    for _ in range(steps):
        logits, state = compiled.forward(tok, state)
        tok = logits[:, -1].argmax(-1)[:, None]


def engine_tokens_per_s(compiled: CompiledModel, state: np.ndarray, steps: int, repeats: int) -> float:
    """Median tokens/s of `repeats` timed runs of `steps` decode steps."""
    return statistics.median(steps / t for t in timed(lambda: _decode(compiled, state, steps), repeats))


def one_round(engines: dict, state: np.ndarray, args, peer: tuple | None) -> dict[str, float]:
    """Every figure of one round (see the module docstring), keyed by metric name; the bound is read
    before and after the engine's timing."""
    load_before = os.getloadavg()[0]
    out: dict[str, float] = {}
    for threads, compiled in engines.items():
        before = bandwidth.measure(threads, args.bw_repeats, compiled.team)
        tps = engine_tokens_per_s(compiled, state, args.steps, args.repeats)
        after = bandwidth.measure(threads, args.bw_repeats, compiled.team)
        bound = max(bandwidth.best(before)[0], bandwidth.best(after)[0])
        # the typical read beside the best: on a shared host the best is often a rare quiet moment
        typical = statistics.median([v for reads in (before, after) for values in reads.values() for v in values])
        print(f"  {threads} thread(s): bound {bound:.1f} GB/s (median read {typical:.1f}), engine {tps:.1f} tok/s "
              f"= {compiled.weight_bytes() * tps / 1e9:.1f} GB/s", flush=True)
        out[f"bound {threads}"], out[f"median read {threads}"], out[f"engine {threads}"] = bound, typical, tps
    if peer:
        llama_bench, files = peer
        for qtype, path in files.items():
            for threads in engines:
                tps = statistics.median(peer_llamacpp.decode_tokens_per_s(llama_bench, path, threads, args.steps))
                print(f"  llama.cpp {qtype} {threads} thread(s): {tps:.1f} tok/s", flush=True)
                out[f"{qtype} {threads}"] = tps
    out["load before"], out["load after"] = load_before, os.getloadavg()[0]
    return out


def add_fractions(rounds: list[dict], weight_bytes: int) -> None:
    """The bound at each thread count is the best reading of the whole run (the machine's, not the
    round's); each round's fraction of it, checked to be at most 1. Beside it, for reading only,
    the fraction of the round's own bound (its reads just before and after the engine): on a shared
    host the memory other tenants leave free moves by 2x within minutes, and this one says how
    close the engine came to what the machine gave it then."""
    for t in THREADS:
        bound = max(r[f"bound {t}"] for r in rounds)
        for i, r in enumerate(rounds):
            r[f"fraction {t}"] = weight_bytes * r[f"engine {t}"] / 1e9 / bound
            r[f"round fraction {t}"] = weight_bytes * r[f"engine {t}"] / 1e9 / r[f"bound {t}"]
            bandwidth.check_fraction(r[f"fraction {t}"], f"engine at {t} thread(s), round {i + 1}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.cpu_decode --rounds 3")
    ap.add_argument("--shape", default="370m", choices=SHAPES, help="model preset")
    ap.add_argument("--layers", type=int, default=None, help="layers (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=32, help="decode steps per timed run (and llama-bench -n)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per round (median)")
    ap.add_argument("--bw-repeats", type=int, default=3, help="reads per bandwidth reader per round")
    ap.add_argument("--prefill", type=int, default=64, help="prompt length for the prefill figure")
    ap.add_argument("--no-peer", action="store_true", help="leave llama.cpp out")
    args = ap.parse_args()
    counts = {"--layers": args.layers, "--rounds": args.rounds, "--steps": args.steps, "--repeats": args.repeats,
              "--bw-repeats": args.bw_repeats, "--prefill": args.prefill}
    bad = [f"{flag} {value}" for flag, value in counts.items() if value is not None and value < 1]
    if bad:
        ap.error(f"{', '.join(bad)}: give at least 1")
    config, int_model = random_int_model(args.shape, args.layers)
    args.layers = config.num_hidden_layers
    engines = {t: CompiledModel(int_model, threads=t) for t in THREADS}
    kernel = engines[THREADS[-1]].kernel
    state = np.zeros((config.num_hidden_layers, 1, config.hidden_size), dtype=np.int32)
    for compiled in engines.values():
        _decode(compiled, state, 2)  # compile, warm up, start the team

    peer, peer_note = None, ""
    llama_bench = None if args.no_peer else peer_llamacpp.find_llama_bench()
    if llama_bench:
        d, inner, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
        files = {q: peer_llamacpp.gguf_file(q, d, inner, args.layers, vocab) for q in peer_llamacpp.TYPES}
        try:  # one short run each, so a llama-bench that cannot run these files fails before the rounds
            for path in files.values():
                peer_llamacpp.decode_tokens_per_s(llama_bench, path, 1, tokens=2, repeats=1)
        except RuntimeError as e:
            raise SystemExit(f"llama.cpp comparison failed: {e}") from None
        peer = (llama_bench, files)
        peer_note = (f"; llama.cpp ({peer_llamacpp.build_info(llama_bench)}) llama-bench tg{args.steps}, "
                     f"Llama-shaped GGUF with {peer_llamacpp.ternary_weight_count(d, inner, args.layers, vocab):,} "
                     "ternary weights, F16 embedding")
    elif not args.no_peer:
        print(peer_llamacpp.MISSING)

    rounds = []
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}", flush=True)
        rounds.append(one_round(engines, state, args, peer))
    add_fractions(rounds, engines[THREADS[-1]].weight_bytes())
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, args.prefill))
    prefill = timed(lambda: engines[THREADS[-1]].forward(prompt, state), 3)
    _record(rounds, engines, kernel, args, config, peer_note, [args.prefill / t for t in prefill])


def _record(rounds: list[dict], engines: dict, kernel: str, args, config, peer_note: str,
            prefill: list[float]) -> None:
    bench = BENCH.format(shape=args.shape.upper())
    loads = ", ".join(f"{r['load before']:.1f}->{r['load after']:.1f}" for r in rounds)
    weight_bytes = engines[THREADS[-1]].weight_bytes()
    notes = (f"{args.layers} layers x d={config.hidden_size}, I={config.intermediate_size}, "
             f"V={config.vocab_size}, {kernel} kernel, {len(rounds)} interleaved "
             f"rounds; load average (1 min) before->after each round: {loads}; bound = best streaming "
             f"read of {bandwidth.buffer_bytes() >> 20} MiB (numpy, torch, engine team) at that thread count, "
             "read before and after the engine in every round; fraction = round's engine GB/s / the best such "
             "read of the whole run")

    def col(key):
        return [r[key] for r in rounds]

    record(bench, "weight bytes read per token", float(weight_bytes), "bytes", notes=notes)
    for t in THREADS:
        record(bench, f"streaming read bandwidth, best of the round, {t} thread(s)", col(f"bound {t}"), "GB/s",
               notes=notes)
        record(bench, f"streaming read bandwidth, median of the round's reads (all readers), {t} thread(s)",
               col(f"median read {t}"), "GB/s", notes=notes)
        record(bench, f"decode tokens/s, engine, {t} thread(s)", col(f"engine {t}"), "tokens/s", notes=notes)
        fraction = col(f"fraction {t}")
        record(bench, f"fraction of the bandwidth bound, {t} thread(s)", fraction, "ratio",
               target=f">= {FRACTION_TARGET}" if t == 2 else "",
               met=min(fraction) >= FRACTION_TARGET if t == 2 else None, notes=notes)
        record(bench, f"fraction of the round's own bound (reads before and after it), {t} thread(s)",
               col(f"round fraction {t}"), "ratio", notes=notes + "; for reading only: the target is on "
               "the whole run's best read")
    if peer_note:
        for qtype in peer_llamacpp.TYPES:
            for t in THREADS:
                record(bench, f"decode tokens/s, llama.cpp {qtype}, {t} thread(s)", col(f"{qtype} {t}"),
                       "tokens/s", notes=notes + peer_note)
                ratio = [r[f"engine {t}"] / r[f"{qtype} {t}"] for r in rounds]
                is_target = qtype == "TQ2_0"
                record(bench, f"speed-up over llama.cpp {qtype}, {t} thread(s)", ratio, "x",
                       target=f">= {PEER_TARGET}" if is_target else "",
                       met=min(ratio) >= PEER_TARGET if is_target else None, notes=notes + peer_note)
    record(bench, f"prefill tokens/s, engine, {THREADS[-1]} threads (T={args.prefill})", prefill, "tokens/s",
           notes=notes)
    summary = ", ".join(f"{t} thread(s) {statistics.median(col(f'engine {t}')):.1f} tok/s "
                        f"({statistics.median(col(f'fraction {t}')):.2f} of the bound)" for t in THREADS)
    print(f"engine: {summary}; loads {loads}")


if __name__ == "__main__":
    main()
