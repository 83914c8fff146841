"""cocotb testbench of the whole core (mmf_top) on an exported bundle.

The card memory (an AXI4 slave model with optional random stalls) is loaded from the bundle's
weights.bin; the host side programs the registers over AXI-Lite exactly as regmap.py's protocol
says, writes each golden embedding row to IN, starts the core, waits for the IRQ and checks the
logits in OUT (and finally the state) bit for bit against golden/vectors.safetensors, which
quant.intref produced. Per-step cycle counts go to MMF_REPORT (JSON) when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from axi_mem import bring_up_card
from cocotb.triggers import RisingEdge, with_timeout

from mmfree_cli.fileio import load_safetensors
from mmfree_cli.hardware import regmap

R = regmap.REGISTERS


@cocotb.test()
async def decode_steps(dut):
    bundle = Path(os.environ["MMF_BUNDLE"])
    steps = int(os.environ.get("MMF_STEPS", "16"))
    stall = float(os.environ.get("MMF_STALL", "0"))
    man, mem, _, host = await bring_up_card(dut, bundle, stall=stall, seed=3,
                                            latency=int(os.environ.get("MMF_LATENCY", "0")))
    layout, regs = man["card_memory_map"], man["registers_to_write"]
    d, vocab = man["model"]["dims"]["d"], man["model"]["dims"]["vocab"]
    vec, _ = load_safetensors(bundle / "golden" / "vectors.safetensors")
    rows, want = vec["embed_rows"].numpy(), vec["logits"].numpy()

    assert await host.read(R["MAGIC"]) == regmap.MAGIC
    assert await host.read(R["VERSION"]) == regmap.VERSION
    assert await host.read(R["DESIGN_ID"]) == int(man["design_id"], 16)
    assert await host.read(R["OUT_LO"]) == regs["OUT"]

    report = []
    for t in range(min(steps, len(rows))):
        mem[regs["IN"]:regs["IN"] + 4 * d] = rows[t].astype("<i4").tobytes()
        await host.write(R["CONTROL"], regmap.CONTROL_START | regmap.CONTROL_IRQ_ENABLE)
        if not int(dut.irq.value):
            await with_timeout(RisingEdge(dut.irq), 20, "ms")
        status = await host.read(R["STATUS"])
        assert status & regmap.STATUS_DONE and not status & regmap.STATUS_ERROR, f"status {status:#x}"
        perf = {k: await host.read(R[k]) for k in ("CYCLES", "TMV_ACTIVE", "TMV_WINDOW", "INSTRET")}
        await host.write(R["STATUS"], regmap.STATUS_DONE)
        assert not int(dut.irq.value)
        got = np.frombuffer(bytes(mem[regs["OUT"]:regs["OUT"] + 4 * vocab]), dtype="<i4")
        bad = np.flatnonzero(got != want[t])
        assert bad.size == 0, f"step {t}: {bad.size} logits differ, first at {bad[0]}: {got[bad[0]]} != {want[t][bad[0]]}"
        report.append(perf)
        dut._log.info(f"step {t}: logits bit-exact, {perf}")
    stride = layout["state"]["row_stride"]
    state = vec["state"].numpy()
    for l in range(state.shape[0]):
        h = np.frombuffer(bytes(mem[regs["STATE"] + l * stride:][:4 * d]), dtype="<i4")
        if steps >= len(rows):
            assert np.array_equal(h, state[l]), f"final state of layer {l} differs"
    if os.environ.get("MMF_REPORT"):
        Path(os.environ["MMF_REPORT"]).write_text(json.dumps({"stall": stall, "steps": report}, indent=1))
