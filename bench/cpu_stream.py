"""The CPU engine's ternary kernel alone, streaming weights from DRAM, beside a plain sum of the
same bytes: does the kernel keep up with memory, apart from the decode around it?

Both walk one packed weight matrix far larger than the last-level cache (`--mib`, default 256 MiB:
8x this machine's 32 MiB L3) in products of `--rows` weight rows
(default 5632 = the 370M model's gate and up projections, K = 1024), each product split over the
thread team by whole tiles and ended at a barrier, as in a decode step. The sum reads the same
bytes with the same split and barriers. The two alternate, product walk by product walk, so each
pair sees the same machine state; the ratio kernel / sum is recorded per pair (median, min..max).
On a shared host the free memory bandwidth moves within seconds (docs/cpu-engine.md): read the
ratio, not the absolute figures.

    python -m bench.cpu_stream                  # 2 threads, 256 MiB, 20 pairs (~30 s)
    python -m bench.cpu_stream --threads 1 --rounds 10
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

from bench.bandwidth import llc_bytes, share_sum
from bench.record import record
from mmfree_cli.engines.cpu_team import Team, barrier, share
from mmfree_cli.engines.cpu_ternary import KERNELS, TILE, default_kernel, matmul, padded

BENCH = "cpu_stream (ternary kernel alone from DRAM vs a plain sum of the same bytes)"
K = 1024


@njit(cache=True, nogil=True)
def _products(tid, nthreads, sync, weights, q, mm, me, out, rows, kernel):
    """Walk the matrix (a whole number of products) in products of `rows` rows, each split by
    tiles and ended at a barrier."""
    for start in range(0, weights.shape[0], rows):
        lo, hi = share(rows // TILE, tid, nthreads)
        matmul(kernel, weights[start:start + rows], q, mm, me, out[:, :rows], lo * TILE, hi * TILE)
        barrier(sync, nthreads)


@njit(cache=True, nogil=True)
def _sums(tid, nthreads, sync, weights, rows, partial):
    """The same walk, summing each thread's share of the bytes."""
    words = weights.reshape(-1).view(np.uint64)
    per = rows * weights.shape[1] // 8
    total = np.uint64(0)
    for start in range(0, words.shape[0], per):
        total += share_sum(tid, nthreads, words[start:start + per])
        barrier(sync, nthreads)
    partial[tid] = total


def packed_matrix(nbytes: int, rows: int, seed: int = 0) -> np.ndarray:
    """Random packed codes in the SIMD kernels' layout (each 2-bit field 0, 1 or 2; the popcount
    kernel reads the same number of bytes), [n, Kp/4] with n a multiple of rows."""
    valid = np.array([b for b in range(256) if all((b >> s) & 3 != 3 for s in (0, 2, 4, 6))], np.uint8)
    n = max(1, nbytes // (rows * padded(K) // 4)) * rows
    return valid[np.random.default_rng(seed).integers(0, len(valid), (n, padded(K) // 4), dtype=np.uint8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.cpu_stream --threads 2 --rounds 20")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mib", type=int, default=256, help="size of the packed matrix (far above the LLC)")
    ap.add_argument("--rows", type=int, default=5632, help="weight rows per product (a multiple of 16)")
    ap.add_argument("--rounds", type=int, default=20, help="kernel/sum pairs")
    args = ap.parse_args()
    if args.rows % TILE or args.rows <= 0:
        ap.error(f"--rows {args.rows}: give a positive multiple of {TILE}")
    if args.threads < 1 or args.rounds < 1:
        ap.error(f"--threads {args.threads} --rounds {args.rounds}: give at least 1 of each")
    if args.mib << 20 <= 2 * llc_bytes():  # a smaller matrix is served from cache: no DRAM figure
        ap.error(f"--mib {args.mib}: give more than twice the last-level cache ({llc_bytes() >> 20} MiB), "
                 "so the weights stream from DRAM")
    kernel = default_kernel()
    weights = packed_matrix(args.mib << 20, args.rows)
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, (1, 1, padded(K))).astype(np.int8)
    one = np.ones((1, 1), np.int64)
    out, partial = np.empty((1, args.rows), np.int64), np.zeros(args.threads, np.uint64)
    team = Team(args.threads)
    index = KERNELS.index(kernel)

    def run_kernel():
        team.run(_products, weights, q, one, one, out, args.rows, index)

    def run_sum():
        team.run(_sums, weights, args.rows, partial)

    run_kernel(), run_sum()  # compile, fault the pages in
    kernel_gbs, sum_gbs = [], []
    for _ in range(args.rounds):
        for fn, into in ((run_kernel, kernel_gbs), (run_sum, sum_gbs)):
            start = time.perf_counter()
            fn()
            into.append(weights.nbytes / (time.perf_counter() - start) / 1e9)
    ratio = [k / s for k, s in zip(kernel_gbs, sum_gbs)]
    notes = (f"{kernel} kernel, {args.threads} thread(s), {weights.nbytes >> 20} MiB of packed weights in products "
             f"of {args.rows} rows x K={K} ({args.rows * padded(K) // 4 >> 10} KiB), a barrier after each; "
             f"{args.rounds} interleaved pairs")
    print(f"kernel {statistics.median(kernel_gbs):.1f} GB/s, sum {statistics.median(sum_gbs):.1f} GB/s, "
          f"ratio {statistics.median(ratio):.2f} ({min(ratio):.2f}..{max(ratio):.2f}); {notes}")
    record(BENCH, f"kernel streaming from DRAM, {args.threads} thread(s)", kernel_gbs, "GB/s", notes=notes)
    record(BENCH, f"plain sum of the same bytes, {args.threads} thread(s)", sum_gbs, "GB/s", notes=notes)
    record(BENCH, f"kernel / sum, {args.threads} thread(s)", ratio, "ratio", notes=notes)


if __name__ == "__main__":
    main()
