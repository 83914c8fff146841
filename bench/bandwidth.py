"""The streaming-read bandwidth that bounds a memory-bound decode, measured so it cannot be beaten.

A decode step of the CPU engine reads every ternary weight once, so its speed is bounded by how
fast the cores can stream memory. A bound measured badly (one reader, a small buffer, the wrong
thread count) is beaten by what it bounds, and "fractions of the bound" above 1 follow. So:

- the buffer is far larger than the last-level cache (8x it, at least 1 GiB): every byte comes
  from DRAM, as the engine's weights do once they outgrow the cache;
- several readers, each at the engine's thread count, each repeated: numpy sums on that many
  Python threads, torch's sum with that many intra-op threads, and the engine's own kept thread
  team (`cpu_team.Team`) running a compiled, vectorised sum; the bound is the best of all of them;
- a fraction of the bound above 1 is an error (`check_fraction`), never a result.

    python -m bench.bandwidth --threads 2
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch
from numba import njit

from mmfree_cli.engines.cpu_team import Team, share

MIN_BYTES = 1 << 30


def llc_bytes() -> int:
    """The largest cache's size from sysfs (0 where it is not reported)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=0)


def buffer_bytes() -> int:
    return max(MIN_BYTES, 8 * llc_bytes())


@njit(cache=True, nogil=True, inline="always")
def sum_words(words):
    """Σ words, a 1-D uint64 view (LLVM vectorises the loop: one 64-byte add per 64 bytes read, far
    below what a core can issue). Take a view, not an index range: a loop from a start numba cannot
    prove non-negative ran unvectorised, at 4.4 GB/s a thread."""
    s = np.uint64(0)
    for i in range(words.shape[0]):
        s += words[i]
    return s


@njit(cache=True, nogil=True, inline="always")
def share_sum(tid, nthreads, words):
    """Σ of thread tid's contiguous share of words (`sum_words`)."""
    lo, hi = share(words.shape[0], tid, nthreads)
    return sum_words(words[lo:hi])


@njit(cache=True, nogil=True)
def _team_sum(tid, nthreads, sync, words, partial):
    partial[tid] = share_sum(tid, nthreads, words)


def _numpy_reader(words: np.ndarray, threads: int):
    chunks = np.array_split(words, threads)

    def read():
        workers = [threading.Thread(target=np.add.reduce, args=(c,)) for c in chunks[1:]]
        for w in workers:
            w.start()
        np.add.reduce(chunks[0])  # numpy releases the GIL inside the reduction
        for w in workers:
            w.join()
    return read


def _torch_reader(words: np.ndarray):
    tensor = torch.from_numpy(words.view(np.int64))
    return lambda: tensor.sum()  # on torch's intra-op threads, set by `measure`


def team_reader(words: np.ndarray, team: Team):
    """A read of words by the thread team, each thread its contiguous share."""
    partial = np.zeros(team.nthreads, dtype=np.uint64)
    return lambda: team.run(_team_sum, words, partial)


def measure(threads: int, repeats: int = 5, team: Team | None = None,
            nbytes: int | None = None) -> dict[str, list[float]]:
    """GB/s of each reader over one buffer of `nbytes` (default `buffer_bytes()`), `repeats` reads
    each, the readers interleaved so they see the same machine state."""
    words = np.ones((nbytes or buffer_bytes()) // 8, dtype=np.uint64)
    readers = {"numpy": _numpy_reader(words, threads), "torch": _torch_reader(words),
               "engine team": team_reader(words, team or Team(threads))}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # outside the timed reads: resizing torch's pool is not a read
    try:
        for read in readers.values():
            read()  # compile, fault the pages in, start threads
        results: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(repeats):
            for name, read in readers.items():
                start = time.perf_counter()
                read()
                results[name].append(words.nbytes / (time.perf_counter() - start) / 1e9)
    finally:
        torch.set_num_threads(torch_threads)
    return results


def best(results: dict[str, list[float]]) -> tuple[float, str]:
    """The bound: the fastest single read of any reader (GB/s), and which reader it was."""
    name = max(results, key=lambda n: max(results[n]))
    return max(results[name]), name


def check_fraction(fraction: float, what: str) -> None:
    """A decode faster than the streaming bound means the bound was measured wrong: stop."""
    if fraction > 1:
        raise SystemExit(f"{what}: {fraction:.2f} of the bandwidth bound, above 1, so the bound is "
                         "wrong (a reader too slow, or the weights served from cache); not recorded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.bandwidth --threads 2 --repeats 7")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results = measure(args.threads, args.repeats)
    for name, values in results.items():
        print(f"{name:12s} best {max(values):6.1f} GB/s, median {np.median(values):6.1f}")
    bound, name = best(results)
    print(f"bound {bound:.1f} GB/s ({name}, {buffer_bytes() >> 20} MiB buffer, {args.threads} threads)")


if __name__ == "__main__":
    main()
