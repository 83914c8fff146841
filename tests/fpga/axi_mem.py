"""A cocotb AXI4 slave memory (the card's DDR in simulation) and an AXI4-Lite master (the host's
register accesses over XDMA's user BAR). Optional random stalls on every channel."""

from __future__ import annotations

import json
import random
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from mmfree_cli.hardware import regmap


def high(sig) -> bool:
    """A 1-bit signal is 1 (X and Z before reset count as 0)."""
    return str(sig.value) == "1"


SLVERR, DECERR = 2, 3


class AxiMemory:
    """Serves m_axi_* bursts from a bytearray; `stall` is the chance of an idle cycle per beat.

    `read_error` / `write_error`: (lo, hi, resp) — a read beat or write whose address lies in
    [lo, hi) is answered with RRESP / BRESP = resp (SLVERR or DECERR) instead of OKAY.
    `latency`: cycles from a burst's address handshake to its first data beat (a DRAM's read
    latency); bursts are pipelined, so back-to-back bursts pay it once."""

    def __init__(self, dut, memory: bytearray, data_bytes: int, stall: float = 0.0, seed: int = 0,
                 read_error: tuple | None = None, write_error: tuple | None = None, latency: int = 0):
        self.dut, self.mem, self.nb, self.stall = dut, memory, data_bytes, stall
        self.read_error, self.write_error, self.latency = read_error, write_error, latency
        self.cycle = 0
        self.rng = random.Random(seed)
        self.bursts: deque = deque()
        dut.m_axi_arready.value = 0
        dut.m_axi_rvalid.value = 0
        dut.m_axi_rlast.value = 0
        dut.m_axi_rresp.value = 0
        dut.m_axi_rdata.value = 0
        dut.m_axi_awready.value = 0
        dut.m_axi_wready.value = 0
        dut.m_axi_bvalid.value = 0
        dut.m_axi_bresp.value = 0
        cocotb.start_soon(self._ar())
        cocotb.start_soon(self._r())
        cocotb.start_soon(self._w())

    @staticmethod
    def _resp(error: tuple | None, addr: int) -> int:
        return error[2] if error is not None and error[0] <= addr < error[1] else 0

    def _idle(self) -> bool:
        return self.stall > 0 and self.rng.random() < self.stall

    async def _ar(self):
        d = self.dut
        while True:
            d.m_axi_arready.value = int(not self._idle())
            await RisingEdge(d.clk)
            self.cycle += 1
            if high(d.m_axi_arvalid) and high(d.m_axi_arready):
                self.bursts.append((int(d.m_axi_araddr.value), int(d.m_axi_arlen.value) + 1,
                                    self.cycle + self.latency))

    async def _r(self):
        d = self.dut
        while True:
            if not self.bursts:
                d.m_axi_rvalid.value = 0
                await RisingEdge(d.clk)
                continue
            addr, beats, due = self.bursts.popleft()
            while self.cycle < due:
                d.m_axi_rvalid.value = 0
                await RisingEdge(d.clk)
            for i in range(beats):
                while self._idle():
                    d.m_axi_rvalid.value = 0
                    await RisingEdge(d.clk)
                a = addr + i * self.nb
                d.m_axi_rdata.value = int.from_bytes(self.mem[a:a + self.nb], "little")
                d.m_axi_rlast.value = int(i == beats - 1)
                d.m_axi_rresp.value = self._resp(self.read_error, a)
                d.m_axi_rvalid.value = 1
                await RisingEdge(d.clk)
                while not high(d.m_axi_rready):
                    await RisingEdge(d.clk)
            d.m_axi_rvalid.value = 0

    async def _w(self):
        d = self.dut
        addrs, beats, responses = deque(), deque(), deque()
        while True:
            d.m_axi_awready.value = int(not self._idle())
            d.m_axi_wready.value = int(not self._idle())
            d.m_axi_bvalid.value = int(bool(responses))
            d.m_axi_bresp.value = responses[0] if responses else 0
            await RisingEdge(d.clk)
            if high(d.m_axi_bvalid) and high(d.m_axi_bready):
                responses.popleft()
            if high(d.m_axi_awvalid) and high(d.m_axi_awready):
                addrs.append(int(d.m_axi_awaddr.value))
            if high(d.m_axi_wvalid) and high(d.m_axi_wready):
                beats.append((int(d.m_axi_wdata.value), int(d.m_axi_wstrb.value)))
            while addrs and beats:
                addr, (data, strb) = addrs.popleft(), beats.popleft()
                raw = data.to_bytes(self.nb, "little")
                resp = self._resp(self.write_error, addr)
                for j in range(self.nb):
                    if strb >> j & 1 and resp == 0:
                        self.mem[addr + j] = raw[j]
                responses.append(resp)


class AxiLiteMaster:
    """Host register access: one 32-bit read or write at a time, as XDMA's user BAR does."""

    def __init__(self, dut):
        self.d = dut
        for name in ("awvalid", "wvalid", "arvalid", "awaddr", "wdata", "araddr"):
            getattr(dut, f"s_axil_{name}").value = 0
        dut.s_axil_wstrb.value = 0xF
        dut.s_axil_bready.value = 1
        dut.s_axil_rready.value = 1

    async def write(self, addr: int, value: int) -> None:
        d = self.d
        d.s_axil_awaddr.value, d.s_axil_awvalid.value = addr, 1
        d.s_axil_wdata.value, d.s_axil_wvalid.value = value & 0xFFFFFFFF, 1
        aw = w = False
        while not (aw and w):
            await RisingEdge(d.clk)
            if high(d.s_axil_awready) and high(d.s_axil_awvalid):
                aw = True
                d.s_axil_awvalid.value = 0
            if high(d.s_axil_wready) and high(d.s_axil_wvalid):
                w = True
                d.s_axil_wvalid.value = 0
        while True:
            await RisingEdge(d.clk)
            if high(d.s_axil_bvalid):
                return

    async def read(self, addr: int) -> int:
        d = self.d
        d.s_axil_araddr.value, d.s_axil_arvalid.value = addr, 1
        while True:
            await RisingEdge(d.clk)
            if high(d.s_axil_arready):
                d.s_axil_arvalid.value = 0
                break
        while True:
            await RisingEdge(d.clk)
            if high(d.s_axil_rvalid):
                return int(d.s_axil_rdata.value)


async def bring_up_card(dut, bundle: Path, period_ns: int = 4, **memory_options):
    """A card as deploy leaves it: card memory holding the bundle's weights.bin, the clock running,
    reset released and the base-address registers programmed from the manifest.
    Returns (manifest, card memory, AxiMemory, AxiLiteMaster); `memory_options` go to AxiMemory."""
    man = json.loads((bundle / "manifest.json").read_text())
    mem = bytearray(man["card_memory_map"]["end"]["offset"])
    image = (bundle / "weights.bin").read_bytes()
    mem[:len(image)] = image
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.aresetn.value = 0
    axi = AxiMemory(dut, mem, man["rtl"]["parameters"]["MEM_W"] // 8, **memory_options)
    host = AxiLiteMaster(dut)
    await ClockCycles(dut.clk, 5)
    dut.aresetn.value = 1
    await ClockCycles(dut.clk, 3)
    for name, addr in man["registers_to_write"].items():
        await host.write(regmap.REGISTERS[f"{name}_LO"], addr & 0xFFFFFFFF)
        await host.write(regmap.REGISTERS[f"{name}_HI"], addr >> 32)
    return man, mem, axi, host
