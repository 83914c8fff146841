"""Where a decode step's time goes, measured on the model itself: the whole compiled step,
its products alone, a plain read of the same weight bytes, and a read of a large buffer.

Four timings alternate in every round, so each round's four see the same machine state:
- decode: `forward_team`, `--tokens` steps in one call of the thread team (no Python between them);
- products: the same products in the same order, split and barriers, with no element-wise steps;
- weights read: a plain sum of the same packed weights, each product's bytes split over the team
  the same way, with a barrier after each (what the products would take at the memory's speed);
- big read: the team summing a buffer 8x the last-level cache (the bound `bench.cpu_decode` uses).
Recorded per round as paired ratios (median, min..max): decode / products is what the element-wise
steps cost, products / weights read how close the kernel comes to memory inside a decode, weights
read / big read what the products' short, barrier-ended streams cost, decode / big read the
fraction of the same moment's read. On a shared host the absolute figures move within seconds
(docs/cpu-engine.md): read the ratios.

    python -m bench.cpu_decode_parts              # 370M shape, 2 threads, 20 rounds (~2 min)
    python -m bench.cpu_decode_parts --threads 1 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from numba import njit

from bench.bandwidth import buffer_bytes, llc_bytes, share_sum, team_reader
from bench.cpu_decode import SHAPES, random_int_model
from bench.record import record
from mmfree_cli.engines import cpu_int
from mmfree_cli.engines.cpu_team import barrier
from mmfree_cli.engines.cpu_ternary import KERNELS

BENCH = "cpu_decode_parts (a decode step against its products alone and plain reads, same rounds, {shape} shape)"


@njit(cache=True, nogil=True)
def _decode(tid, nthreads, sync, x, state, layers, final_gain, head, work, sig, rsq, kernel, tokens):
    for _ in range(tokens):
        cpu_int.forward_team(tid, nthreads, sync, x, state, 1, layers, final_gain, head, work, sig, rsq, kernel)


@njit(cache=True, nogil=True)
def _products(tid, nthreads, sync, layers, head, work, kernel, tokens):
    q_d3, q_d, q_inner, mm, me, y_ifg, y_d, y_inner = work[:8]
    for _ in range(tokens):
        for layer in range(layers[0].shape[0]):
            _, _, _, _, pifg, po, _, pgate, pdown = cpu_int._layer(layer, layers)
            cpu_int._product(tid, nthreads, sync, pifg, q_d3, mm, me, y_ifg, kernel)
            cpu_int._product(tid, nthreads, sync, po, q_d, mm, me, y_d, kernel)
            cpu_int._product(tid, nthreads, sync, pgate, q_d, mm, me, y_inner, kernel)
            cpu_int._product(tid, nthreads, sync, pdown, q_inner, mm, me, y_d, kernel)
        cpu_int._product(tid, nthreads, sync, head, q_d, mm, me, work[-1], kernel)


@njit(cache=True, nogil=True)
def _product_read(tid, nthreads, sync, weights):
    """Σ of this thread's share of one product's weight bytes, then the team meets."""
    total = share_sum(tid, nthreads, weights.reshape(-1).view(np.uint64))
    barrier(sync, nthreads)
    return total


@njit(cache=True, nogil=True)
def _weights_read(tid, nthreads, sync, pifg, po, pgate, pdown, head, partial, tokens):
    total = np.uint64(0)
    for _ in range(tokens):
        for layer in range(pifg.shape[0]):
            total += _product_read(tid, nthreads, sync, pifg[layer])
            total += _product_read(tid, nthreads, sync, po[layer])
            total += _product_read(tid, nthreads, sync, pgate[layer])
            total += _product_read(tid, nthreads, sync, pdown[layer])
        total += _product_read(tid, nthreads, sync, head)
    partial[tid] = total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.cpu_decode_parts --rounds 20")
    ap.add_argument("--shape", default="370m", choices=SHAPES, help="model preset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20, help="rounds of the four timings")
    ap.add_argument("--tokens", type=int, default=8, help="decode steps per timing")
    args = ap.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.tokens < 1:
        ap.error(f"--threads {args.threads} --rounds {args.rounds} --tokens {args.tokens}: give at least 1 of each")
    config, int_model = random_int_model(args.shape)
    compiled = cpu_int.CompiledModel(int_model, threads=args.threads)
    per_token = compiled.weight_bytes()
    if per_token <= 2 * llc_bytes():  # served from cache: no ratio to memory would mean anything
        ap.error(f"--shape {args.shape}: its {per_token >> 20} MiB of weights fit in twice this "
                 f"machine's last-level cache ({llc_bytes() >> 20} MiB); give a larger shape (e.g. --shape 2.7b)")
    team, kernel = compiled.team, KERNELS.index(compiled.kernel)
    x = compiled.embed[[1]].astype(np.int64)
    state = np.zeros((config.num_hidden_layers, 1, config.hidden_size), dtype=np.int32)
    work, partial = compiled.work(1, 1), np.zeros(args.threads, np.uint64)
    big = np.ones(buffer_bytes() // 8, dtype=np.uint64)
    layers, head = compiled.layers, compiled.head
    timings = {
        "decode": (lambda: team.run(_decode, x, state, layers, compiled.final_gain, head, work, cpu_int.SIG,
                                    cpu_int.RSQ, kernel, args.tokens), per_token * args.tokens),
        "products": (lambda: team.run(_products, layers, head, work, kernel, args.tokens), per_token * args.tokens),
        "weights read": (lambda: team.run(_weights_read, layers[4][0], layers[5][0], layers[7][0], layers[8][0],
                                          head[0], partial, args.tokens), per_token * args.tokens),
        "big read": (team_reader(big, team), big.nbytes),
    }
    for run, _ in timings.values():
        run()  # compile, fault the pages in
    gbs: dict[str, list[float]] = {name: [] for name in timings}
    for _ in range(args.rounds):
        for name, (run, nbytes) in timings.items():
            start = time.perf_counter()
            run()
            gbs[name].append(nbytes / (time.perf_counter() - start) / 1e9)
    notes = (f"{args.shape} shape ({per_token / 1e6:.1f} MB of weights a token), {compiled.kernel} kernel, "
             f"{args.threads} thread(s), {args.tokens} tokens a timing, {args.rounds} rounds; big read "
             f"{big.nbytes >> 20} MiB")
    bench = BENCH.format(shape=args.shape.upper())
    for name, values in gbs.items():
        record(bench, f"{name}, {args.threads} thread(s)", values, "GB/s", notes=notes)
    for a, b in (("decode", "products"), ("products", "weights read"), ("weights read", "big read"),
                 ("decode", "big read")):
        ratio = [p / q for p, q in zip(gbs[a], gbs[b])]
        record(bench, f"{a} / {b}, {args.threads} thread(s)", ratio, "ratio", notes=notes)
        print(f"{a} / {b}: {statistics.median(ratio):.3f} ({min(ratio):.3f}..{max(ratio):.3f})")
    print(", ".join(f"{name} {statistics.median(v):.1f} GB/s" for name, v in gbs.items()) + f"; {notes}")


if __name__ == "__main__":
    main()
