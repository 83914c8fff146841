"""cocotb testbench: card memory answering with an AXI error response ends the run with STATUS.ERROR.

The core runs an exported bundle's program against the AXI memory model three times: first with
SLVERR on the reads of one ternary matrix (RRESP), then with DECERR on the writes of the logits
(BRESP), then cleanly. Each faulty run must end with DONE, ERROR and MEM_ERROR set (and the IRQ,
so a host waiting for DONE is told); the clean run after clearing them must not set them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from axi_mem import DECERR, SLVERR, AxiLiteMaster, AxiMemory
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from mmfree_cli.hardware import regmap

R = regmap.REGISTERS
FAULT = regmap.STATUS_DONE | regmap.STATUS_ERROR | regmap.STATUS_MEM_ERROR


async def run_once(dut, host) -> int:
    await host.write(R["CONTROL"], regmap.CONTROL_START | regmap.CONTROL_IRQ_ENABLE)
    if not int(dut.irq.value):
        await with_timeout(RisingEdge(dut.irq), 20, "ms")
    status = await host.read(R["STATUS"])
    await host.write(R["STATUS"], FAULT)
    return status


@cocotb.test()
async def error_responses_end_in_status_error(dut):
    bundle = Path(os.environ["MMF_BUNDLE"])
    man = json.loads((bundle / "manifest.json").read_text())
    layout, regs = man["card_memory_map"], man["registers_to_write"]
    mem = bytearray(layout["end"]["offset"])
    image = (bundle / "weights.bin").read_bytes()
    mem[:len(image)] = image
    block = next(b for b in man["weights"]["blocks"] if b["kind"] == "ternary")
    w0 = regs["WEIGHTS"] + block["offset"]

    cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
    dut.aresetn.value = 0
    axi = AxiMemory(dut, mem, man["rtl"]["parameters"]["MEM_W"] // 8, stall=0.1, seed=5,
                    read_error=(w0, w0 + block["bytes"], SLVERR))
    host = AxiLiteMaster(dut)
    await ClockCycles(dut.clk, 5)
    dut.aresetn.value = 1
    await ClockCycles(dut.clk, 3)
    for name, addr in regs.items():
        await host.write(R[f"{name}_LO"], addr & 0xFFFFFFFF)
        await host.write(R[f"{name}_HI"], addr >> 32)

    status = await run_once(dut, host)
    assert status & FAULT == FAULT, f"SLVERR on reads: STATUS {status:#x}"
    pc = await host.read(R["ERROR_PC"])
    dut._log.info(f"read error: STATUS {status:#x}, ERROR_PC {pc:#x}")

    axi.read_error = None
    axi.write_error = (regs["OUT"], regs["OUT"] + layout["out"]["bytes"], DECERR)
    status = await run_once(dut, host)
    assert status & FAULT == FAULT, f"DECERR on writes: STATUS {status:#x}"

    axi.write_error = None
    status = await run_once(dut, host)
    assert status & regmap.STATUS_DONE and not status & (regmap.STATUS_ERROR | regmap.STATUS_MEM_ERROR), \
        f"clean run after the errors: STATUS {status:#x}"
