"""cocotb testbench: card memory answering with an AXI error response ends the run with STATUS.ERROR.

The core runs an exported bundle's program against the AXI memory model three times: first with
SLVERR on the reads of one ternary matrix (RRESP), then with DECERR on the writes of the logits
(BRESP), then cleanly. Each faulty run must end with DONE, ERROR and MEM_ERROR set (and the IRQ,
so a host waiting for DONE is told); the clean run after clearing them must not set them.
"""

from __future__ import annotations

import os
from pathlib import Path

import cocotb
from axi_mem import DECERR, SLVERR, bring_up_card
from cocotb.triggers import RisingEdge, with_timeout

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
    man, mem, axi, host = await bring_up_card(dut, Path(os.environ["MMF_BUNDLE"]), stall=0.1, seed=5)
    layout, regs = man["card_memory_map"], man["registers_to_write"]
    block = next(b for b in man["weights"]["blocks"] if b["kind"] == "ternary")
    w0 = regs["WEIGHTS"] + block["offset"]
    axi.read_error = (w0, w0 + block["bytes"], SLVERR)

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
