"""cocotb profile of one decode step: the cycles of every instruction, written to MMF_PROFILE as
JSON ([op, sub, n, words, cycles] per instruction) for the throughput model (estimates.py).
An instruction's cycles run from its dispatch to the next one's, so fetches are included."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from axi_mem import bring_up_card
from cocotb.triggers import ReadOnly, ValueChange
from cocotb.utils import get_sim_time

from mmfree_cli.fileio import load_safetensors
from mmfree_cli.hardware import regmap
from mmfree_cli.hardware.isa import decode

ST_IDLE, ST_NEXT = 0, 11
PERIOD_NS = 4


@cocotb.test()
async def profile_one_step(dut):
    bundle = Path(os.environ["MMF_BUNDLE"])
    man, mem, _, host = await bring_up_card(dut, bundle, PERIOD_NS, latency=int(os.environ.get("MMF_LATENCY", "0")))
    regs = man["registers_to_write"]
    vec, _ = load_safetensors(bundle / "golden" / "vectors.safetensors")
    d = man["model"]["dims"]["d"]
    mem[regs["IN"]:regs["IN"] + 4 * d] = vec["embed_rows"].numpy()[0].astype("<i4").tobytes()
    await host.write(regmap.REGISTERS["CONTROL"], regmap.CONTROL_START)
    rows, pending, since, prev = [], None, 0, None
    while True:
        # wake on state changes only (not every cycle): the simulation runs at tb_core's speed
        await ValueChange(dut.core.state)
        await ReadOnly()
        cycle = get_sim_time(unit="ns") // PERIOD_NS
        state = int(dut.core.state.value)
        if state != prev and state in (ST_NEXT, ST_IDLE) and prev is not None:
            if pending is not None:
                rows.append([pending.op, pending.sub, pending.n,
                             pending.n * pending.a if pending.op == "MATVEC" else 0, cycle - since])
            since = cycle
            if state == ST_IDLE:
                break
            pending = decode(int(dut.core.ir.value).to_bytes(16, "little"))
        prev = state
    Path(os.environ["MMF_PROFILE"]).write_text(json.dumps(rows))
