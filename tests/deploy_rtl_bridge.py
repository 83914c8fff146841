"""cocotb testbench that puts the RTL core (mmf_top under Icarus) behind the emulated XDMA nodes.

It serves deploy/emulator/remote.py's protocol on the Unix socket MMF_CARD_SOCKET: register
accesses become real AXI-Lite transactions on the core, DMA reads and writes go to the card memory
that the core's AXI4 master reads through the AXI memory model, and EVENTS counts rising edges of
the core's IRQ line. The socket is read on a helper thread; the simulation drains its queue every
few clock cycles, so the core runs while the host waits. QUIT (the emulator unmounting) ends it.
"""

from __future__ import annotations

import os
import queue
import socket
import threading

import cocotb
from axi_mem import AxiLiteMaster, AxiMemory
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from mmfree_cli.deploy.emulator.remote import read_request, send_reply

POLL_CYCLES = 16


def accept_requests(path: str, requests: queue.Queue) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    conn, _ = server.accept()
    requests.put(("CONNECTED", conn, 0, b""))
    while True:
        try:
            request = read_request(conn)
        except OSError:
            request = ("QUIT", 0, 0, b"")
        requests.put(request)
        if request[0] == "QUIT":
            break
    server.close()


@cocotb.test()
async def serve_card(dut):
    memory = bytearray(int(os.environ["MMF_CARD_MEMORY"]))
    cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
    dut.aresetn.value = 0
    AxiMemory(dut, memory, int(os.environ["MMF_MEM_W"]) // 8)
    host = AxiLiteMaster(dut)
    await ClockCycles(dut.clk, 5)
    dut.aresetn.value = 1
    await ClockCycles(dut.clk, 3)
    irq = {"events": 0}

    async def count_interrupts():
        while True:
            await RisingEdge(dut.irq)
            irq["events"] += 1
    cocotb.start_soon(count_interrupts())

    requests: queue.Queue = queue.Queue()
    threading.Thread(target=accept_requests, args=(os.environ["MMF_CARD_SOCKET"], requests), daemon=True).start()
    conn = None
    while True:
        await ClockCycles(dut.clk, POLL_CYCLES)
        while not requests.empty():
            op, addr, arg, payload = requests.get()
            if op == "CONNECTED":
                conn = addr
            elif op == "QUIT":
                try:
                    send_reply(conn)
                except OSError:  # the emulator went away without waiting for the answer
                    pass
                dut._log.info("host unmounted: simulation done")
                return
            elif op == "INFO":
                send_reply(conn, len(memory))
            elif op == "R32":
                send_reply(conn, await host.read(addr))
            elif op == "W32":
                await host.write(addr, arg)
                send_reply(conn)
            elif op == "MREAD":
                send_reply(conn, arg, bytes(memory[addr:addr + arg]))
            elif op == "MWRITE":
                memory[addr:addr + len(payload)] = payload
                send_reply(conn)
            elif op == "EVENTS":
                send_reply(conn, irq["events"])
                irq["events"] = 0
            else:
                send_reply(conn, status=22)
