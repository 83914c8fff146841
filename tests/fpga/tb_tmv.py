"""cocotb testbench of mmf_tmv, the ternary matrix-vector unit.

Layers: a driver loads the x buffer and streams weight words with random gaps (stalls), a monitor
collects the result writes, the golden model is the int64 product W @ x, the checker compares
every row bit-exactly and the lane-busy counters.
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from mmfree_cli.hardware.image import pack_ternary_rows, padded, words

LANES = int(os.environ.get("MMF_LANES", "16"))


def x_entries(x: np.ndarray) -> list[int]:
    """int8 vector (padded to LANES) -> x-buffer entries, byte l = lane l."""
    b = x.astype(np.int8).tobytes()
    return [int.from_bytes(b[i:i + LANES], "little") for i in range(0, len(b), LANES)]


async def reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for sig in (dut.start, dut.w_valid, dut.x_we, dut.w_data, dut.x_waddr, dut.x_wdata,
                dut.words_per_row, dut.rows, dut.dst):
        sig.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def monitor(dut, out: dict):
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.r_we.value):
            out[int(dut.r_addr.value)] = dut.r_data.value.to_signed()


async def run_matvec(dut, w: np.ndarray, x: np.ndarray, stall: float, dst: int = 5) -> None:
    n, k = w.shape
    kp = padded(k, LANES)
    xp = np.zeros(kp, dtype=np.int8)
    xp[:k] = x
    for a, e in enumerate(x_entries(xp)):
        dut.x_we.value, dut.x_waddr.value, dut.x_wdata.value = 1, a, e
        await RisingEdge(dut.clk)
    dut.x_we.value = 0
    await RisingEdge(dut.clk)
    results: dict[int, int] = {}
    mon = cocotb.start_soon(monitor(dut, results))
    dut.words_per_row.value, dut.rows.value, dut.dst.value, dut.start.value = kp // LANES, n, dst, 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    stream = words(pack_ternary_rows(w, LANES), LANES)
    i = 0
    while i < len(stream):
        valid = random.random() >= stall
        dut.w_valid.value = int(valid)
        dut.w_data.value = stream[i] if valid else random.getrandbits(2 * LANES)
        await RisingEdge(dut.clk)
        if valid and int(dut.w_ready.value):
            i += 1
    dut.w_valid.value = 0
    while int(dut.busy.value):
        await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, 2)
    mon.cancel()
    want = (w.astype(np.int64) @ x.astype(np.int64))
    got = np.array([results.get(dst + r, None) for r in range(n)], dtype=object)
    assert list(got) == [int(v) for v in want], f"rows differ: got {list(got)[:8]} want {list(want)[:8]}"
    active, window = int(dut.perf_active.value), int(dut.perf_window.value)
    assert active == len(stream)
    if stall == 0:
        assert active == window, f"lanes idle while streaming: {active}/{window}"


@cocotb.test()
async def random_and_stalls(dut):
    """Random sizes (K not a multiple of LANES), random values, 0% and 30% input stalls."""
    await reset(dut)
    rng = np.random.default_rng(1)
    for stall in (0.0, 0.3):
        for _ in range(3):
            n, k = int(rng.integers(1, 9)), int(rng.integers(1, 3 * LANES + 5))
            w = rng.integers(-1, 2, (n, k))
            x = rng.integers(-128, 128, k)
            await run_matvec(dut, w, x, stall)


@cocotb.test()
async def edge_values(dut):
    """-128 everywhere against all -1 and all +1 (the extremes), zeros, one-hot rows."""
    await reset(dut)
    k = 4 * LANES
    x = np.full(k, -128)
    await run_matvec(dut, -np.ones((2, k), dtype=int), x, 0.0)
    await run_matvec(dut, np.ones((2, k), dtype=int), x, 0.0)
    await run_matvec(dut, np.zeros((3, k), dtype=int), np.full(k, 127), 0.1)
    await run_matvec(dut, np.eye(4, k, dtype=int), np.arange(k) - 64, 0.2)
    await run_matvec(dut, np.ones((1, k), dtype=int), np.zeros(k, dtype=int), 0.0)
