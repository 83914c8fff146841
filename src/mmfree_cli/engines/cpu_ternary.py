"""Packed ternary × int8 matrix products for the CPU integer engine (numba), two kernels.

Both read 2 bits a weight, form exact sums acc[r, n] = Σ_k W[n, k]·q[r, k] and write them
requantised (`requantize`, the integer spec's output scaling). A call computes the rows lo..hi-1
(a thread's share: `cpu_team`), and a product over R activation rows (prefill) reuses each weight
row, loaded once, for all of them. Activations arrive as int8 q [G, R, Kp], Kp = K
rounded up to a multiple of 256, zero-padded; G > 1 runs several projections of the same input
width in one pass (weight rows stacked, group g's rows multiplied by q[g]), so a token pays fewer
barriers.

`vnni` (CPUs with AVX-512 VNNI): weights in 256-weight blocks of 64 bytes; byte t of block b holds
the codes c = w + 1 of weights 256b + 64p + t in bits 2p..2p+1 (p = 0..3; padding code 1). One
block is one 64-byte load, four shift-and-mask steps and four `vpdpbusd` (u8 code × s8
activation, summed in int32 lanes): Σ c·q, and acc = Σ c·q - Σ q.

`popcount` (any CPU): two bit planes per row, plus and minus, each Kp/64 little-endian uint64
words (bit i of word j is weight 64j + i),
and the activations' 8 two's-complement bit planes X_b:
acc = Σ_b 2^b·(popcount(plus & X_b) - popcount(minus & X_b)), bit 7 counting -128.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

BLOCK = 256
KERNELS = ("vnni", "popcount")

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_V64I8, _V32I16, _V16I32 = ir.VectorType(_I8, 64), ir.VectorType(_I16, 32), ir.VectorType(_I32, 16)


def has_vnni() -> bool:
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("avx512vnni") and features.get("avx512bw"))


def default_kernel() -> str:
    """`vnni` where the CPU has it, else `popcount`; MMFREE_CPU_KERNEL overrides."""
    chosen = os.environ.get("MMFREE_CPU_KERNEL") or ("vnni" if has_vnni() else "popcount")
    if chosen not in KERNELS or (chosen == "vnni" and not has_vnni()):
        raise ValueError(f"MMFREE_CPU_KERNEL={chosen!r}: choose popcount"
                         + (" or vnni" if has_vnni() else " (this CPU has no AVX-512 VNNI)"))
    return chosen


def padded(k: int) -> int:
    return -(-k // BLOCK) * BLOCK


def layout(codes: np.ndarray, kernel: str) -> np.ndarray:
    """Ternary codes int8 [N, K] → the kernel's weight array (see the module docstring)."""
    n, k = codes.shape
    c = np.ones((n, padded(k)), dtype=np.uint8)
    c[:, :k] = codes + 1
    if kernel == "vnni":
        c = c.reshape(n, -1, 4, 64)  # [N, blocks, p, t]
        packed = c[:, :, 0] | (c[:, :, 1] << 2) | (c[:, :, 2] << 4) | (c[:, :, 3] << 6)
        return np.ascontiguousarray(packed.reshape(n, -1))
    planes = [np.packbits(c == v, axis=-1, bitorder="little") for v in (2, 0)]
    return np.ascontiguousarray(np.concatenate(planes, axis=1))  # [N, 2·Kp/8]: plus, then minus


def _splat(ty, n, v):
    return ir.Constant(ir.VectorType(ty, n), [ir.Constant(ty, v)] * n)


@intrinsic
def _dot_vnni(typingctx, w, x, nblocks):
    """Σ_k code[k]·x[k] over `nblocks` 256-weight blocks of one weight row w and activations x."""
    sig = types.int64(w, x, types.intp)

    def codegen(context, builder, signature, args):
        if not has_vnni():  # compiled into `matmul`'s other branch, never run here: LLVM could not emit it
            trap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.trap")
            builder.call(trap, [])
            return ir.Constant(_I64, 0)
        wbase = context.make_array(signature.args[0])(context, builder, args[0]).data
        xbase = context.make_array(signature.args[1])(context, builder, args[1]).data
        mod = builder.module
        dot = cgutils.get_or_insert_function(mod, ir.FunctionType(_V16I32, [_V16I32] * 3),
                                             "llvm.x86.avx512.vpdpbusd.512")
        reduce_add = cgutils.get_or_insert_function(mod, ir.FunctionType(_I32, [_V16I32]),
                                                    "llvm.vector.reduce.add.v16i32")
        accp = cgutils.alloca_once_value(builder, ir.Constant(_V16I32, None))
        with cgutils.for_range(builder, args[2]) as loop:
            b = loop.index
            wptr = builder.gep(wbase, [builder.mul(b, ir.Constant(b.type, 64))])
            wv = builder.load(builder.bitcast(wptr, _V64I8.as_pointer()), align=1)
            acc = builder.load(accp)
            for p in range(4):
                # codes of plane p: shift 16-bit lanes, then mask each byte (no bits cross bytes)
                shifted = builder.lshr(builder.bitcast(wv, _V32I16), _splat(_I16, 32, 2 * p))
                codes = builder.and_(builder.bitcast(shifted, _V64I8), _splat(_I8, 64, 3))
                offset = builder.add(builder.mul(b, ir.Constant(b.type, BLOCK)), ir.Constant(b.type, 64 * p))
                xv = builder.load(builder.bitcast(builder.gep(xbase, [offset]), _V64I8.as_pointer()), align=1)
                acc = builder.call(dot, [acc, builder.bitcast(codes, _V16I32), builder.bitcast(xv, _V16I32)])
            builder.store(acc, accp)
        return builder.sext(builder.call(reduce_add, [builder.load(accp)]), _I64)
    return sig, codegen


@njit(cache=True, nogil=True)
def requantize(acc, m, e):
    """sat32(round_half_up(acc·m / 2^e)): the integer spec's output scaling, e ≥ 0."""
    v = acc * m
    if e > 0:
        v = (v + (np.int64(1) << (e - 1))) >> e
    return min(max(v, np.int64(-2147483648)), np.int64(2147483647))


@njit(cache=True, nogil=True)
def matmul_vnni(weights, q, mm, me, out, lo, hi):
    """out[:, lo:hi] = requantize(W q, mm, me) for the weight rows lo..hi-1 of W in the vnni layout
    [N, Kp/4], q int8 [G, R, Kp] and per-row multipliers mm, me [G, R]: the weight rows form G
    equal groups (projections sharing one pass), group g multiplied by q[g] and scaled by mm[g],
    me[g]."""
    groups, n_seq, kp = q.shape
    per_group = weights.shape[0] // groups
    nblocks = kp // BLOCK
    qsum = np.zeros((groups, n_seq), dtype=np.int64)
    for g in range(groups):
        for r in range(n_seq):
            for k in range(kp):
                qsum[g, r] += q[g, r, k]
    for n in range(lo, hi):
        g = n // per_group
        for r in range(n_seq):
            out[r, n] = requantize(_dot_vnni(weights[n], q[g, r], nblocks) - qsum[g, r], mm[g, r], me[g, r])


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
    """out[:, lo:hi] = requantize(W q, mm, me) for W as bit planes, bytes [N, 2·Kp/8] (the rest as
    in `matmul_vnni`)."""
    planes = _activation_planes(q)
    n_rows, kw = weights.shape[0], weights.shape[1] // 16
    per_group = n_rows // q.shape[0]
    for n in range(lo, hi):
        g = n // per_group
        words = weights[n].view(np.uint64)  # plus plane, then minus plane
        for r in range(q.shape[1]):
            x = planes[g, r]
            c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = np.int64(0)
            for j in range(kw):
                p = words[j]
                m = words[kw + j]
                c0 += np.int64(_popcount(p & x[0, j])) - np.int64(_popcount(m & x[0, j]))
                c1 += np.int64(_popcount(p & x[1, j])) - np.int64(_popcount(m & x[1, j]))
                c2 += np.int64(_popcount(p & x[2, j])) - np.int64(_popcount(m & x[2, j]))
                c3 += np.int64(_popcount(p & x[3, j])) - np.int64(_popcount(m & x[3, j]))
                c4 += np.int64(_popcount(p & x[4, j])) - np.int64(_popcount(m & x[4, j]))
                c5 += np.int64(_popcount(p & x[5, j])) - np.int64(_popcount(m & x[5, j]))
                c6 += np.int64(_popcount(p & x[6, j])) - np.int64(_popcount(m & x[6, j]))
                c7 += np.int64(_popcount(p & x[7, j])) - np.int64(_popcount(m & x[7, j]))
            acc = c0 + 2 * c1 + 4 * c2 + 8 * c3 + 16 * c4 + 32 * c5 + 64 * c6 - 128 * c7
            out[r, n] = requantize(acc, mm[g, r], me[g, r])


MATMULS = {"vnni": matmul_vnni, "popcount": matmul_popcount}
VNNI, POPCOUNT = KERNELS.index("vnni"), KERNELS.index("popcount")


@njit(cache=True, nogil=True)
def matmul(kernel, weights, q, mm, me, out, lo, hi):
    """`matmul_vnni` (kernel = VNNI) or `matmul_popcount`: both layouts are uint8 [N, Kp/4], so one
    compiled caller serves both (a kernel passed as a function argument would be compiled again in
    every process: numba cannot cache it)."""
    if kernel == VNNI:
        matmul_vnni(weights, q, mm, me, out, lo, hi)
    else:
        matmul_popcount(weights, q, mm, me, out, lo, hi)
