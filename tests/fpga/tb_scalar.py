"""cocotb testbench of mmf_scalar (rsqrt table, reciprocal by division, requantisation multiplier,
eps term) against quant/intref.py on random and edge operands (zero, one, the largest sums)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from mmfree_cli.hardware.isa import SCALAR_OPS
from mmfree_cli.hardware.machine import kfn
from mmfree_cli.quant import intref


async def command(dut, name, imm=0, bimm=0):
    dut.go.value, dut.imm.value, dut.bimm.value = 1 << SCALAR_OPS[name], imm & 0xFFFFFFFF, bimm
    await RisingEdge(dut.clk)
    dut.go.value = 0
    await RisingEdge(dut.clk)
    while str(dut.busy.value) == "1":
        await RisingEdge(dut.clk)


async def pass_end(dut, op, top, ss):
    dut.pass_end.value, dut.pass_op.value, dut.pass_top.value, dut.pass_ss.value = 1, op, top, ss
    await RisingEdge(dut.clk)
    dut.pass_end.value = 0
    await RisingEdge(dut.clk)
    while str(dut.busy.value) == "1":   # k is ready when busy falls
        await RisingEdge(dut.clk)


@cocotb.test()
async def scalar_ops_random_and_edges(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.go.value, dut.pass_end.value = 1, 0, 0
    dut.imm.value = dut.bimm.value = dut.pass_op.value = 0
    dut.pass_top.value = dut.pass_ss.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    rng = np.random.default_rng(9)
    sums = [0, 1, 2, 127, 1 << 14, (1 << 16) - 1, 1 << 30, (1 << 47) + 12345] + \
        [int(v) for v in rng.integers(1, 1 << 47, 12)]
    tops = [0, 1, 2, 127, 128, 1 << 14, 32767, 32768] + [int(v) for v in rng.integers(1, 1 << 15, 12)]
    k_prev = 0
    for ss, top in zip(sums, tops):
        # a NORM16 pass ends: ss, amax and kq are taken, k moves on
        await pass_end(dut, 1, top, ss)
        assert dut.k.value.to_signed() == kfn(top)
        kq = k_prev
        k_prev = kfn(top)
        await command(dut, "RSQRT")
        r, e = intref.rsqrt_fixed(np.int64(ss))
        assert (int(dut.r.value), dut.e.value.to_signed()) == (int(r), int(e)), f"rsqrt({ss})"
        await command(dut, "RECIP")
        want = -(-(127 << 32) // top) if top > 0 else 0  # ceil, as intref
        assert int(dut.recip.value) == want, f"recip({top})"
        cm, cs = int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(20, 70))
        await command(dut, "OUTMUL", imm=cm, bimm=cs)
        mm, me = intref.output_multiplier((cm, cs), top, kq, r, e)
        assert (int(dut.mm.value), int(dut.me.value)) == (int(mm), int(me)), f"outmul {cm} {cs} {top}"
        for z, p in ((ss, int(rng.integers(-40, 20))), (48, -30), (0, 0), (ss + 1, 25)):
            if z < 1 << 31:
                await command(dut, "ZSET", imm=z)
            else:  # too wide for an immediate: take it from ss, as o_proj's eps does
                await command(dut, "ZSAVE")
                z = int(dut.ss.value)
            await command(dut, "PSET", imm=p)
            before = int(dut.ss.value)
            await command(dut, "EPS")
            want = before + int(intref.eps_term(np.int64(z), np.int64(p)))
            assert int(dut.ss.value) == want, f"eps_term(z={z}, p={p})"
