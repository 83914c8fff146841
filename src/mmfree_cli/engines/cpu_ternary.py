"""Packed ternary × int8 matrix products for the CPU integer engine (numba), four kernels.

Every kernel reads 2 bits a weight, forms exact sums acc[r, n] = Σ_k W[n, k]·q[r, k] and writes
them requantised (`requantize`, the integer spec's output scaling). A call computes the weight
rows lo..hi-1 (a thread's share: `cpu_team`), and a product over R activation rows (prefill)
reuses each weight tile, loaded once, for all of them. Activations arrive as int8 q [G, R, Kp],
Kp = K rounded up to a multiple of 256, zero-padded; G > 1 runs several projections of the same
input width in one pass (weight rows stacked, group g's rows multiplied by q[g]), so a token pays
fewer barriers. Each projection's rows are padded to a multiple of TILE (16) with zero weights.

The three SIMD kernels (`vnni`: AVX-512 VNNI, 64-byte vectors; `avxvnni`: AVX-VNNI, 32 bytes;
`avx2`: `vpmaddubsw` + `vpmaddwd`, 32 bytes) share one layout, one int32 lane per weight row: a
tile of TILE (16) rows is stored block by block ([N/16, Kp/16, 16 rows, 4 bytes]), each row's
block a 4-byte word holding 16 weights, byte j carrying the codes c = w + 1 of weights 16b + 4p + j
in bits 2p..2p+1 (p = 0..3; padding code 1). Per block (one 64-byte line: one vector, or two of
8 rows) and plane p: one mask (kept in place, as 4^p·c, so no shifts compete with the dot step for
its port) and one u8 × s8 dot step of the masked vector with activations 16b + 4p..+3 broadcast
to every lane, so each lane sums its own row and a tile's 16 sums need no horizontal reduction
(the previous layout, four rows a tile summed across lanes, spent ~15 ns a tile on it, fitted
from two cache-resident products: a third of a 1024-wide product's time). Eight accumulators
(planes × two blocks) hide the dot step's latency; the planes are scaled back by exact shifts at
the end; a software prefetch runs PREFETCH_BYTES ahead of the weights. Σ c·q - Σ q is the exact sum.

`popcount` (any CPU): two bit planes per row, plus and minus, each Kp/64 little-endian uint64
words (bit i of word j is weight 64j + i), and the activations' 8 two's-complement bit planes X_b:
acc = Σ_b 2^b·(popcount(plus & X_b) - popcount(minus & X_b)), bit 7 counting -128.

`default_kernel` picks, among the kernels this CPU can run, the fastest on a timed product
(`kernel_timings`), once per process; MMFREE_CPU_KERNEL overrides.
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

BLOCK = 256  # Kp is a multiple of this (4 × 64 weights: the widest kernel's block)
TILE = 16  # weight rows per tile: one 64-byte vector of int32 sums
KERNELS = ("vnni", "avxvnni", "avx2", "popcount")
VNNI, AVXVNNI, AVX2, POPCOUNT = range(4)
WIDTH = (64, 32, 32, 0)  # bytes per vector of each SIMD kernel
_NEEDS = {"vnni": ("avx512vnni", "avx512bw"), "avxvnni": ("avxvnni", "avx2"), "avx2": ("avx2",),
          "popcount": ()}

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def available() -> tuple[str, ...]:
    """The kernels this CPU can run (features as LLVM sees them)."""
    features = llvm_binding.get_host_cpu_features()
    return tuple(k for k in KERNELS if all(features.get(f) for f in _NEEDS[k]))


def has_vnni() -> bool:
    return "vnni" in available()


def padded(k: int) -> int:
    return -(-k // BLOCK) * BLOCK


def padded_rows(n: int) -> int:
    return -(-n // TILE) * TILE


def layout(codes: np.ndarray, kernel: str) -> np.ndarray:
    """Ternary codes int8 [N, K] → the kernel's weight array, uint8 [padded_rows(N), Kp/4] (see the
    module docstring)."""
    n, k = codes.shape
    c = np.ones((padded_rows(n), padded(k)), dtype=np.uint8)
    c[:n, :k] = codes + 1
    if WIDTH[KERNELS.index(kernel)]:
        c = c.reshape(c.shape[0] // TILE, TILE, -1, 4, 4)  # [tiles, row, block, p, j]
        packed = c[..., 0, :] | (c[..., 1, :] << 2) | (c[..., 2, :] << 4) | (c[..., 3, :] << 6)
        return np.ascontiguousarray(packed.transpose(0, 2, 1, 3)).reshape(c.shape[0] * TILE, -1)
    planes = [np.packbits(c == v, axis=-1, bitorder="little") for v in (2, 0)]
    return np.ascontiguousarray(np.concatenate(planes, axis=1))  # [N, 2·Kp/8]: plus, then minus


def _splat(ty, n, v):
    return ir.Constant(ir.VectorType(ty, n), [ir.Constant(ty, v)] * n)


def _dot_step(builder, kernel, acc, codes, x):
    """acc (int32 lanes) += the sums of four u8 codes × s8 x bytes each."""
    mod, width = builder.module, WIDTH[kernel]
    vd = ir.VectorType(_I32, width // 4)
    if kernel == AVX2:  # u8 × s8 pairs summed to i16 (at most 2·48·127: no saturation), pairs to i32
        vw = ir.VectorType(_I16, width // 2)
        vb = ir.VectorType(_I8, width)
        pairs = builder.call(cgutils.get_or_insert_function(mod, ir.FunctionType(vw, [vb, vb]),
                                                            "llvm.x86.avx2.pmadd.ub.sw"), [codes, x])
        madd = cgutils.get_or_insert_function(mod, ir.FunctionType(vd, [vw, vw]), "llvm.x86.avx2.pmadd.wd")
        quads = builder.call(madd, [pairs, _splat(_I16, width // 2, 1)])
        return builder.add(acc, quads)
    name = "llvm.x86.avx512.vpdpbusd.512" if kernel == VNNI else "llvm.x86.avx512.vpdpbusd.256"
    dot = cgutils.get_or_insert_function(mod, ir.FunctionType(vd, [vd] * 3), name)
    return builder.call(dot, [acc, builder.bitcast(codes, vd), builder.bitcast(x, vd)])


# bits 2p..2p+1 of each byte, masked in place (4^p·c, no shift: shifts compete with the dot step
# for one port on AVX-512), except where `vpmaddubsw` would saturate: AVX2's plane 3 (192·127·2)
_PLANE_SHIFT = {VNNI: (0, 2, 4, 6), AVXVNNI: (0, 2, 4, 6), AVX2: (0, 2, 4, 0)}


def _plane(builder, kernel, wv, p):
    """Plane p of the weight bytes wv: 4^p·codes, or codes (shifted down) for AVX2's plane 3."""
    width = WIDTH[kernel]
    if _PLANE_SHIFT[kernel][p] != 2 * p:  # shift 16-bit lanes, then mask bytes
        wv = builder.bitcast(builder.lshr(builder.bitcast(wv, ir.VectorType(_I16, width // 2)),
                                          _splat(_I16, width // 2, 2 * p)), wv.type)
        return builder.and_(wv, _splat(_I8, width, 3))
    return builder.and_(wv, _splat(_I8, width, 3 << (2 * p)))


# Software prefetch this far ahead of the weight stream: the hardware streamers stop at each 4 KB
# page. On the 2-core Xeon (loaded, four-row layout) 0 / 1 / 2 / 4 / 8 KB ahead read 7.5 / 8.6 /
# 9.3 / 8.7 / 9.8 GB per CPU-second; on the 2-core AMD EPYC (others paused, this layout) a token's
# products from DRAM took 4.0-5.5 / 5.4-7.3 / 3.9-4.6 / 3.8-4.5 / 5.6-6.9 ms at 0 / 1 / 2 / 4 / 8 KB.
PREFETCH_BYTES = 4096


def _prefetch(builder, pointer):
    """Ask for the cache line at `pointer` (read, keep in all levels); never faults."""
    signature = ir.FunctionType(ir.VoidType(), [_I8.as_pointer(), _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, signature, "llvm.prefetch.p0i8")
    builder.call(fn, [pointer, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])


def _tile_dot_codegen(kernel):
    def codegen(context, builder, signature, args):
        if KERNELS[kernel] not in available():  # compiled into `matmul`, never run here: LLVM could
            trap = cgutils.get_or_insert_function(  # not emit the instructions
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.trap")
            builder.call(trap, [])
            return context.get_dummy_value()
        width = WIDTH[kernel]
        lanes, nvec = width // 4, TILE * 4 // width  # rows per vector, vectors per block
        vb, vd = ir.VectorType(_I8, width), ir.VectorType(_I32, lanes)
        weights = context.make_array(signature.args[0])(context, builder, args[0])
        xbase = context.make_array(signature.args[2])(context, builder, args[2]).data
        out = context.make_array(signature.args[4])(context, builder, args[4]).data
        tile, nblocks = args[1], args[3]
        ty = tile.type
        rowbytes = cgutils.unpack_tuple(builder, weights.shape, 2)[1]
        tbase = builder.gep(weights.data, [builder.mul(tile, builder.mul(rowbytes, ir.Constant(ty, TILE)))])
        # [vector][block of the pair][plane]: independent chains, so the dot step's latency is hidden
        accs = [[[cgutils.alloca_once_value(builder, ir.Constant(vd, None)) for _ in range(4)]
                 for _ in range(2)] for _ in range(nvec)]

        def splat_x(offset):  # the 4 activation bytes at offset, in every lane
            word = builder.load(builder.bitcast(builder.gep(xbase, [offset]), _I32.as_pointer()), align=1)
            lane0 = builder.insert_element(ir.Constant(vd, None), word, ir.Constant(_I32, 0))
            splat = builder.shuffle_vector(lane0, ir.Constant(vd, None), ir.Constant(vd, [0] * lanes))
            return builder.bitcast(splat, vb)

        with cgutils.for_range(builder, builder.udiv(nblocks, ir.Constant(ty, 2))) as loop:
            for u in range(2):
                block = builder.add(builder.mul(loop.index, ir.Constant(ty, 2)), ir.Constant(ty, u))
                xs = [splat_x(builder.add(builder.mul(block, ir.Constant(ty, 16)), ir.Constant(ty, 4 * p)))
                      for p in range(4)]
                start = builder.mul(block, ir.Constant(ty, 4 * TILE))
                _prefetch(builder, builder.gep(tbase, [builder.add(start, ir.Constant(ty, PREFETCH_BYTES))]))
                for v in range(nvec):
                    wv = builder.load(builder.bitcast(builder.gep(tbase, [builder.add(start, ir.Constant(ty, width * v))]),
                                                      vb.as_pointer()), align=1)
                    for p in range(4):
                        acc = accs[v][u][p]
                        builder.store(_dot_step(builder, kernel, builder.load(acc), _plane(builder, kernel, wv, p),
                                                xs[p]), acc)
        vq = ir.VectorType(_I64, lanes)

        def splat_q(value):
            return builder.shuffle_vector(builder.insert_element(ir.Constant(vq, None), value, ir.Constant(_I32, 0)),
                                          ir.Constant(vq, None), ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))
        qsum, m, e = args[5:8]
        half = builder.ashr(builder.shl(ir.Constant(_I64, 1), e), ir.Constant(_I64, 1))  # 0 at e = 0
        low, high = _splat(_I64, lanes, -2**31), _splat(_I64, lanes, 2**31 - 1)
        for v in range(nvec):  # plane p's lanes hold 4^p·(its sums) where `_plane` left codes in place
            planes = (builder.ashr(builder.add(builder.load(accs[v][0][p]), builder.load(accs[v][1][p])),
                                   _splat(_I32, lanes, _PLANE_SHIFT[kernel][p])) for p in range(4))
            total = builder.sext(functools.reduce(builder.add, planes), vq)
            # `requantize`, in vectors: sat32((total - qsum)·m + half >> e)
            scaled = builder.ashr(builder.add(builder.mul(builder.sub(total, splat_q(qsum)), splat_q(m)),
                                              splat_q(half)), splat_q(e))
            scaled = builder.select(builder.icmp_signed("<", scaled, low), low, scaled)
            scaled = builder.select(builder.icmp_signed(">", scaled, high), high, scaled)
            target = builder.gep(out, [ir.Constant(_I64, lanes * v)])
            builder.store(scaled, builder.bitcast(target, vq.as_pointer()), align=8)
        return context.get_dummy_value()
    return codegen


def _tile_dot(kernel):
    """An intrinsic (weights, tile, x, nblocks, out, qsum, m, e): out[0:TILE] = requantize(Σ_k code·x[k]
    - qsum, m, e) for the rows of weight tile `tile`, over `nblocks` (even) blocks of 16 weights a
    row (the requantisation in vectors too: in a loop after the call it cost 30% of a 1024-wide
    product's time)."""
    def typer(typingctx, weights, tile, x, nblocks, out, qsum, m, e):
        return types.none(weights, tile, x, nblocks, out, types.int64, types.int64, types.int64), _tile_dot_codegen(kernel)
    typer.__name__ = f"_tile_dot_{KERNELS[kernel]}"
    return intrinsic(typer)


_tile_dot_vnni, _tile_dot_avxvnni, _tile_dot_avx2 = (_tile_dot(k) for k in (VNNI, AVXVNNI, AVX2))


@njit(cache=True, nogil=True)
def requantize(acc, m, e):
    """sat32(round_half_up(acc·m / 2^e)): the integer spec's output scaling, e ≥ 0."""
    v = acc * m
    if e > 0:
        v = (v + (np.int64(1) << (e - 1))) >> e
    return min(max(v, np.int64(-2147483648)), np.int64(2147483647))


@njit(cache=True, nogil=True)
def matmul_simd(kernel, weights, q, mm, me, out, lo, hi):
    """out[:, n] = requantize(W q, mm, me) for the weight rows lo <= n < hi of W in a SIMD layout
    (`kernel`: VNNI, AVXVNNI or AVX2), q int8 [G, R, Kp] and per-row multipliers mm, me [G, R]:
    the (padded) weight rows form G equal groups (projections sharing one pass), group g multiplied
    by q[g], scaled by mm[g], me[g] and written to out's columns g·N..(g+1)·N-1, N = out.shape[1] / G."""
    groups, n_seq, kp = q.shape
    rows_per_group, n_out = weights.shape[0] // groups, out.shape[1] // groups
    nblocks = kp // 16
    qsum = np.empty((groups, n_seq), dtype=np.int64)
    for g in range(groups):
        for r in range(n_seq):
            total = np.int64(0)  # a local sum, so the loop vectorises
            for k in range(kp):
                total += q[g, r, k]
            qsum[g, r] = total
    tiles_per_group = rows_per_group // TILE
    acc = np.empty(TILE, dtype=np.int64)
    for g in range(groups):
        g0 = g * tiles_per_group  # the group's first tile
        t_lo, t_hi = max(lo // TILE, g0), min((hi + TILE - 1) // TILE, g0 + tiles_per_group)
        # whole tiles (all their rows in lo..hi-1 and in the projection) go straight to out, in a
        # loop with no per-tile tests: those cost a 1024-wide product ~25% of its time (in cache)
        w_lo = max(t_lo, (lo + TILE - 1) // TILE)
        w_hi = max(w_lo, min(t_hi, hi // TILE, g0 + n_out // TILE))
        if kernel == VNNI:  # one loop per kernel: a test per tile cost ~14%
            for t in range(w_lo, w_hi):
                for r in range(n_seq):
                    _tile_dot_vnni(weights, t, q[g, r], nblocks, out[r, g * n_out + (t - g0) * TILE:],
                                   qsum[g, r], mm[g, r], me[g, r])
        elif kernel == AVXVNNI:
            for t in range(w_lo, w_hi):
                for r in range(n_seq):
                    _tile_dot_avxvnni(weights, t, q[g, r], nblocks, out[r, g * n_out + (t - g0) * TILE:],
                                      qsum[g, r], mm[g, r], me[g, r])
        else:
            for t in range(w_lo, w_hi):
                for r in range(n_seq):
                    _tile_dot_avx2(weights, t, q[g, r], nblocks, out[r, g * n_out + (t - g0) * TILE:],
                                   qsum[g, r], mm[g, r], me[g, r])
        for t in range(t_lo, t_hi):  # the partial tiles at either end, through acc
            if w_lo <= t < w_hi:
                continue
            for r in range(n_seq):
                _tile(kernel, weights, t, q[g, r], nblocks, acc, qsum[g, r], mm[g, r], me[g, r])
                for i in range(TILE):
                    n = t * TILE + i
                    if lo <= n < hi and n - g * rows_per_group < n_out:
                        out[r, n - g * rows_per_group + g * n_out] = acc[i]


@njit(cache=True, nogil=True, inline="always")
def _tile(kernel, weights, t, x, nblocks, dest, qsum, m, e):
    if kernel == VNNI:
        _tile_dot_vnni(weights, t, x, nblocks, dest, qsum, m, e)
    elif kernel == AVXVNNI:
        _tile_dot_avxvnni(weights, t, x, nblocks, dest, qsum, m, e)
    else:
        _tile_dot_avx2(weights, t, x, nblocks, dest, qsum, m, e)


@intrinsic
def _popcount(typingctx, x):
    """llvm.ctpop on a uint64: one `popcnt` / `vpopcntq` lane."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [_I64]), args)
    return sig, codegen


@njit(cache=True, nogil=True)
def _activation_planes(q):
    """int8 q [G, R, Kp] → its 8 two's-complement bit planes uint64 [G, R, 8, Kp/64]."""
    planes = np.zeros((q.shape[0], q.shape[1], 8, q.shape[2] // 64), dtype=np.uint64)
    for g in range(q.shape[0]):
        for r in range(q.shape[1]):
            for k in range(q.shape[2]):
                byte = np.int64(q[g, r, k]) & 0xFF
                for b in range(8):
                    if (byte >> b) & 1:
                        planes[g, r, b, k // 64] |= np.uint64(1) << np.uint64(k % 64)
    return planes


@njit(cache=True, nogil=True)
def matmul_popcount(weights, q, mm, me, out, lo, hi):
    """`matmul_simd` for W as bit planes, bytes [N, 2·Kp/8]."""
    planes = _activation_planes(q)
    kw = weights.shape[1] // 16
    rows_per_group, n_out = weights.shape[0] // q.shape[0], out.shape[1] // q.shape[0]
    for n in range(lo, hi):
        g, j = n // rows_per_group, n % rows_per_group
        if j >= n_out:
            continue
        words = weights[n].view(np.uint64)  # plus plane, then minus plane
        for r in range(q.shape[1]):
            x = planes[g, r]
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.int64(0)
            for w in range(kw):
                p = words[w]
                m = words[kw + w]
                c0 += np.int64(_popcount(p & x[0, w])) - np.int64(_popcount(m & x[0, w]))
                c1 += np.int64(_popcount(p & x[1, w])) - np.int64(_popcount(m & x[1, w]))
                c2 += np.int64(_popcount(p & x[2, w])) - np.int64(_popcount(m & x[2, w]))
                c3 += np.int64(_popcount(p & x[3, w])) - np.int64(_popcount(m & x[3, w]))
                c4 += np.int64(_popcount(p & x[4, w])) - np.int64(_popcount(m & x[4, w]))
                c5 += np.int64(_popcount(p & x[5, w])) - np.int64(_popcount(m & x[5, w]))
                c6 += np.int64(_popcount(p & x[6, w])) - np.int64(_popcount(m & x[6, w]))
                c7 += np.int64(_popcount(p & x[7, w])) - np.int64(_popcount(m & x[7, w]))
            acc = c0 + 2 * c1 + 4 * c2 + 8 * c3 + 16 * c4 + 32 * c5 + 64 * c6 - 128 * c7
            out[r, g * n_out + j] = requantize(acc, mm[g, r], me[g, r])


@njit(cache=True, nogil=True)
def matmul(kernel, weights, q, mm, me, out, lo, hi):
    """`matmul_simd` or `matmul_popcount` by the kernel's index in KERNELS: every layout is uint8
    [N, Kp/4], so one compiled caller serves all (a kernel passed as a function argument would be
    compiled again in every process: numba cannot cache it)."""
    if kernel == POPCOUNT:
        matmul_popcount(weights, q, mm, me, out, lo, hi)
    else:
        matmul_simd(kernel, weights, q, mm, me, out, lo, hi)


def kernel_timings(kernels: tuple[str, ...] | None = None, n: int = 2048, k: int = 1024,
                   repeats: int = 5) -> dict[str, float]:
    """Seconds of CPU time (this thread's, so other jobs on the machine count less) of the best of
    `repeats` products of a random [n, k] ternary matrix (512 KB at 2 bits: cache-resident, so the
    kernel's arithmetic is what is timed) with one activation row, per kernel."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, (n, k)).astype(np.int8)
    q = rng.integers(-127, 128, (1, 1, padded(k))).astype(np.int8)
    mm, me, out = np.ones((1, 1), np.int64), np.ones((1, 1), np.int64), np.empty((1, n), np.int64)
    timings = {}
    for name in kernels or available():
        weights, index = layout(codes, name), KERNELS.index(name)
        matmul(index, weights, q, mm, me, out, 0, weights.shape[0])
        best = float("inf")
        for _ in range(repeats):
            start = time.thread_time()
            for _ in range(8):
                matmul(index, weights, q, mm, me, out, 0, weights.shape[0])
            best = min(best, (time.thread_time() - start) / 8)
        timings[name] = best
    return timings


@functools.cache
def default_kernel() -> str:
    """MMFREE_CPU_KERNEL if set, else the fastest kernel this CPU runs (`kernel_timings`)."""
    chosen = os.environ.get("MMFREE_CPU_KERNEL")
    if chosen is None:
        timings = kernel_timings()
        return min(timings, key=timings.get)
    if chosen not in available():
        raise ValueError(f"MMFREE_CPU_KERNEL={chosen!r}: choose one of {', '.join(available())} "
                         "(the kernels this CPU can run)")
    return chosen
