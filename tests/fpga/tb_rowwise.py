"""cocotb testbench of mmf_rowwise against the numpy integer reference (quant/intref.py).

The driver feeds random and edge operands with random gaps, the monitor collects outputs in
order, the golden model is intref's own function for each op, the checker compares bit-exactly.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from mmfree_cli.quant import intref
from mmfree_cli.quant.intspec import FRAC_H, FRAC_X, ONE_G

I32 = (-(1 << 31), (1 << 31) - 1)
EDGES = [0, 1, -1, 127, -128, I32[0], I32[1], 1 << 20, -(1 << 20), (16 << 16) - 1, 16 << 16, -(16 << 16)]


def golden(op: int, frac: int, a, b, c) -> np.ndarray:
    a, b, c = (np.asarray(v, dtype=np.int64) for v in (a, b, c))
    if op == 0:
        return intref.sigmoid_q(a, frac)
    if op == 1:
        return intref.silu_q(a, frac)
    if op == 2:
        return intref.forget_gate(a, b)
    if op == 3:
        return intref.recurrence(c, b, intref.input_gate(a, b))
    if op == 4:
        return intref.sat32(a + b)
    return intref.requantize(a, b, c)


def operands(op: int, n: int, rng: np.random.Generator):
    def mix(lo, hi, edges):
        v = rng.integers(lo, hi, n, dtype=np.int64)
        pick = rng.random(n) < 0.3
        v[pick] = rng.choice(np.array([e for e in edges if lo <= e < hi], dtype=np.int64), pick.sum())
        return v
    a = mix(I32[0], I32[1] + 1, EDGES)
    if op in (0, 1):
        a = np.where(rng.random(n) < 0.5, a, rng.integers(-(40 << 16), 40 << 16, n))
    b = mix(0, ONE_G + 1, [0, ONE_G, 1, ONE_G - 1])       # gates / lower bounds in [0, 2^20]
    c = mix(I32[0], I32[1] + 1, EDGES)                     # state
    if op == 4:
        b = mix(I32[0], I32[1] + 1, EDGES)
    if op == 5:
        b = mix(0, 1 << 31, [0, (1 << 31) - 1, 1 << 30])   # M_m < 2^31
        c = rng.integers(1, 63, n)                          # M_e in 1..62
        a = mix(-(1 << 31), 1 << 31, [I32[0], I32[1], 0])
    return a, b, c


async def monitor(dut, out: list):
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.out_valid.value):
            out.append(dut.y.value.to_signed())


@cocotb.test()
async def every_op_random_and_edges(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.in_valid.value = 1, 0
    dut.op.value, dut.frac.value, dut.a.value, dut.b.value, dut.c.value = 0, 16, 0, 0, 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    rng = np.random.default_rng(7)
    for op in range(6):
        for frac in ((FRAC_X, FRAC_H) if op in (0, 1) else (FRAC_X,)):
            n = 200
            a, b, c = operands(op, n, rng)
            got: list[int] = []
            mon = cocotb.start_soon(monitor(dut, got))
            # op and frac are an instruction's: set two cycles before its first element, held through it
            dut.op.value, dut.frac.value = op, frac
            await ClockCycles(dut.clk, 2)
            i = 0
            while i < n:
                fire = random.random() > 0.25   # input gaps
                dut.in_valid.value = int(fire)
                if fire:
                    dut.a.value, dut.b.value, dut.c.value = int(a[i]), int(b[i]), int(c[i])
                    i += 1
                await RisingEdge(dut.clk)
            dut.in_valid.value = 0
            await ClockCycles(dut.clk, 40)   # drain the pipeline (LAT 27)
            mon.cancel()
            want = golden(op, frac, a, b, c)
            bad = [j for j in range(n) if got[j] != int(want[j])] if len(got) == n else ["count"]
            assert not bad, (f"op {op} frac {frac}: {len(got)} outputs, first mismatch {bad[:1]}: "
                             f"a={a[bad[0]] if bad[0] != 'count' else ''} got {got[bad[0]] if bad[0] != 'count' else ''} "
                             f"want {want[bad[0]] if bad[0] != 'count' else ''}")
