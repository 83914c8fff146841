"""A team of OS threads running one compiled function together, meeting at a spin barrier.

A decode step is ~100 dependent products of a few hundred KB each. Forking a parallel region per
product (numba's `prange`) pays a thread wake-up each time: 25-30 µs with sleeping OpenMP workers,
a quarter of the step's time on 2 cores; spinning OpenMP workers are fast on idle cores but stall
for whole scheduler slices (a token took 1.5 s, measured) when other jobs share the cores. Here the
threads are started once (`Team`) and run each forward call's whole model in one compiled
(`nogil`) function, splitting each product by rows and meeting at a barrier between the steps. Waiters spin
briefly (`pause`), then sleep on a futex, so a team on busy cores gives way instead of burning
slices. Linux on x86-64 only, as the VNNI kernel already is.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_I32, _I64 = ir.IntType(32), ir.IntType(64)
# Waiters spin this many time-stamp counter ticks before sleeping: ~200 µs at this machine's 2.6 GHz
# TSC (125-500 µs at any 1-4 GHz one), longer than thread 0's steps between products. A count of
# `pause`s is no clock (a pause lasts ~10 cycles on older Intel cores, ~140 since Skylake; 4000
# took ~80 µs on the Xeon, 105-130 µs on the AMD EPYC). A futex wake-up took ~11 µs on the EPYC.
SPIN_TICKS = 500_000
SYS_FUTEX, FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 202, 128, 129  # x86-64 Linux


def _element(context, builder, signature, args):
    array = context.make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(array.data, [args[1]])


@intrinsic
def _atomic_add(typingctx, array, index, value):
    """array[index] += value (int32) atomically; returns the old value."""
    def codegen(context, builder, signature, args):
        value = builder.trunc(args[2], _I32) if args[2].type != _I32 else args[2]
        return builder.atomic_rmw("add", _element(context, builder, signature, args), value, "seq_cst")
    return types.int32(array, index, value), codegen


@intrinsic
def _atomic_load(typingctx, array, index):
    """array[index] (int32), read atomically."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element(context, builder, signature, args), "seq_cst", 4)
    return types.int32(array, index), codegen


@intrinsic
def _pause(typingctx):
    """The x86 spin-wait hint (`pause`): a cheap wait that frees the core's pipeline."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                            "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _ticks(typingctx):
    """The time-stamp counter (`rdtsc`): a constant-rate clock on x86-64 CPUs of the last decade."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _futex(typingctx, array, index, op, value):
    """Linux futex(&array[index], op, value): FUTEX_WAIT_PRIVATE sleeps while the 32-bit word
    still equals value; FUTEX_WAKE_PRIVATE wakes up to value sleepers."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64], var_arg=True),
                                            "syscall")
        address = builder.ptrtoint(_element(context, builder, signature, args), _I64)
        null = ir.Constant(_I64, 0)
        op, value = (builder.sext(a, _I64) if a.type != _I64 else a for a in args[2:])
        return builder.call(fn, [ir.Constant(_I64, SYS_FUTEX), address, op, value, null, null, null])
    return types.int64(array, index, op, value), codegen


@njit(cache=True, nogil=True)
def barrier(sync, nthreads):
    """Wait until all `nthreads` threads of the team have arrived. sync: int32 [3] shared by the team
    (arrivals, generation, sleepers), zero at the start. A waiter spins a little (the other threads
    are usually microseconds away), then sleeps on the generation word until the last arrival
    wakes it, so a waiting thread leaves its core to whoever needs it."""
    if nthreads == 1:
        return
    generation = _atomic_load(sync, 1)
    if _atomic_add(sync, 0, 1) == nthreads - 1:
        _atomic_add(sync, 0, -nthreads)  # the last arrival resets the count, then releases the others
        _atomic_add(sync, 1, 1)
        if _atomic_load(sync, 2) > 0:
            _futex(sync, 1, FUTEX_WAKE_PRIVATE, nthreads)
        return
    start = _ticks()
    while _ticks() - start < SPIN_TICKS:
        if _atomic_load(sync, 1) != generation:
            return
        _pause()
    _atomic_add(sync, 2, 1)
    while _atomic_load(sync, 1) == generation:
        _futex(sync, 1, FUTEX_WAIT_PRIVATE, generation)  # returns at once if the word has moved on
    _atomic_add(sync, 2, -1)


@njit(cache=True, nogil=True)
def share(n, tid, nthreads):
    """Thread tid's rows [lo, hi) of n rows split evenly."""
    return n * tid // nthreads, n * (tid + 1) // nthreads


class Team:
    """`nthreads` - 1 helper threads started once and kept, each waiting at a start barrier (spin,
    then futex sleep) for the next job; `run` posts a job, runs it as thread 0 and returns when all
    threads have finished it. Starting threads per call cost a forward ~0.1-0.2 ms and a trip
    through the GIL per helper; a kept team costs one barrier. `run_kept` goes further for calls
    repeated on the same buffers (decode steps): the helpers stay in a compiled loop between calls
    and never touch the GIL (each `run` handed the GIL back and forth, 57-140 µs a call, measured)."""

    def __init__(self, nthreads: int):
        if nthreads < 1:  # a team of none would wait at its first barrier for ever
            raise ValueError(f"a thread team needs at least 1 thread, not {nthreads}")
        self.nthreads = nthreads
        self._shared = _Shared(nthreads)
        self._lock = threading.Lock()  # one job at a time (a server may call from several threads)
        for tid in range(1, nthreads):
            threading.Thread(target=_serve, args=(self._shared, tid), daemon=True,
                             name=f"mmfree-cpu-team-{tid}").start()
        weakref.finalize(self, _stop, self._shared)

    def run(self, fn, *args) -> None:
        """fn(tid, nthreads, sync, *args) on every thread of the team (this one is tid 0). fn must be
        compiled with nogil=True, or the threads run one at a time and its barriers deadlock."""
        shared = self._shared
        if self.nthreads == 1:
            fn(0, 1, shared.sync, *args)
            return
        with self._lock:
            _leave(shared)
            shared.job = (fn, args)
            barrier(shared.start, self.nthreads)
            try:
                fn(0, self.nthreads, shared.sync, *args)
            finally:
                barrier(shared.end, self.nthreads)
                shared.job = None

    def run_kept(self, key, helper, lead, *args) -> None:
        """One call of a job whose helpers stay inside `helper` between calls with the same key (an
        object compared by identity; args must be the same then, as the helpers keep the first
        call's). helper(tid, nthreads, sync, go, command, *args) loops: meet thread 0 at the barrier
        `go`, return if command[0] is 0, else run the job; lead(nthreads, sync, go, command, *args)
        sets command[0] = 1, meets them at `go` and runs the job as thread 0. Both compiled nogil.
        A `run`, another key or the team's end brings the helpers back (command 0)."""
        shared = self._shared
        with self._lock:
            if self.nthreads > 1 and shared.kept is not key:
                _leave(shared)
                shared.job, shared.kept = (helper, (shared.go, shared.command, *args)), key
                barrier(shared.start, self.nthreads)
            lead(self.nthreads, shared.sync, shared.go, shared.command, *args)


class _Shared:
    """What the helpers see: the job, and the barrier words (sync for the job's own barriers; go and
    command for a kept job's calls)."""

    def __init__(self, nthreads: int):
        self.nthreads, self.job, self.stopping, self.kept = nthreads, None, False, None
        self.sync, self.start, self.end, self.go = (np.zeros(3, dtype=np.int32) for _ in range(4))
        self.command = np.zeros(1, dtype=np.int32)


def _serve(shared: _Shared, tid: int) -> None:
    while True:
        barrier(shared.start, shared.nthreads)
        if shared.stopping:
            return
        fn, args = shared.job
        try:
            fn(tid, shared.nthreads, shared.sync, *args)
        finally:
            barrier(shared.end, shared.nthreads)


def _leave(shared: _Shared) -> None:
    """Bring the helpers out of a kept job's loop (command 0), back to their start barrier."""
    if shared.kept is not None:
        shared.command[0] = 0
        barrier(shared.go, shared.nthreads)
        barrier(shared.end, shared.nthreads)
        shared.job = shared.kept = None


def _stop(shared: _Shared) -> None:
    """Release the helpers from their start barrier with nothing to do (the team was dropped)."""
    if shared.nthreads > 1:
        _leave(shared)
        shared.stopping = True
        barrier(shared.start, shared.nthreads)
