"""The host side of the mmfree core's protocol (hardware/regmap.py), over an XDMA transport:
identify the card, upload and verify the weight image, and run decode steps.

One decode step: the token's embedding row goes to IN (h2c), CONTROL = START | IRQ_ENABLE, wait for
user interrupt 0 (or poll STATUS), clear DONE, read the logits from OUT (c2h).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..hardware import regmap
from .xdma import CardTimeout, Xdma

R = regmap.REGISTERS


@dataclass(frozen=True)
class Identity:
    magic: int
    version: int
    design_id: int
    caps: int

    def describe(self) -> dict:
        return {"magic": f"{self.magic:08x}", "version": f"{self.version >> 16}.{self.version & 0xFFFF}",
                "design_id": f"{self.design_id:08x}", "lanes": self.caps & 0xFFFF,
                "saddr_w": (self.caps >> 16) & 0xFF, "xaddr_w": self.caps >> 24}


class Card:
    """An mmfree core behind `xdma`, laid out as `manifest` says."""

    def __init__(self, xdma: Xdma, manifest: dict, timeout: float = 10.0, wait: str = "irq"):
        if wait not in ("irq", "poll"):
            raise UserError(f"--wait {wait}: choose irq or poll")
        self.xdma, self.manifest, self.timeout, self.wait = xdma, manifest, timeout, wait
        self.layout = manifest["card_memory_map"]
        self.regs = manifest["registers_to_write"]
        dims = manifest["model"]["dims"]
        self.d, self.vocab, self.layers = dims["d"], dims["vocab"], dims["layers"]
        self.state_stride = self.layout["state"].get("row_stride", 4 * self.d)

    # ---- identity
    def identify(self) -> Identity:
        x = self.xdma
        return Identity(x.read32(R["MAGIC"]), x.read32(R["VERSION"]), x.read32(R["DESIGN_ID"]), x.read32(R["CAPS"]))

    def check_identity(self, force: bool = False) -> Identity:
        """The card's identity; refuse (unless `force`) when it is not the bundle's design."""
        ident, dev = self.identify(), self.xdma.prefix
        if ident.magic != regmap.MAGIC:
            raise UserError(f"{dev}: no mmfree core there (MAGIC reads {ident.magic:08x}, want {regmap.MAGIC:08x}) "
                            "— the FPGA holds another design; program it with the bundle's bitstream")
        if ident.version >> 16 != regmap.VERSION >> 16:
            raise UserError(f"{dev}: register map version {ident.describe()['version']} on the card, this mmfree "
                            f"speaks {regmap.VERSION >> 16}.x — rebuild the design or use a matching mmfree")
        want = int(self.manifest["design_id"], 16)
        if ident.design_id != want and not force:
            raise UserError(f"{dev}: design ID {ident.design_id:08x} on the card does not match the bundle's "
                            f"{want:08x} — program the card with this bundle's design, export for the card's "
                            "design, or pass --force")
        return ident

    # ---- weights
    def upload(self, image: bytes) -> float:
        """Write weights.bin to WEIGHTS (h2c); returns the seconds it took."""
        t0 = time.perf_counter()
        self.xdma.dma_write(self.regs["WEIGHTS"], image)
        return time.perf_counter() - t0

    def verify(self) -> list[dict]:
        """Read the image back (c2h) and check every block's sha256; returns the bad blocks."""
        base, bad = self.regs["WEIGHTS"], []
        blocks = self.manifest["weights"]["blocks"]
        image = self.xdma.dma_read(base, self.manifest["weights"]["bytes"])
        for b in blocks:
            data = image[b["offset"]:b["offset"] + b["bytes"]]
            if hashlib.sha256(data).hexdigest() != b["sha256"]:
                bad.append({"name": b["name"], "card_address": base + b["offset"], "bytes": b["bytes"]})
        return bad

    def set_addresses(self) -> None:
        for name, addr in self.regs.items():
            self.xdma.write32(R[f"{name}_LO"], addr & 0xFFFFFFFF)
            self.xdma.write32(R[f"{name}_HI"], addr >> 32)

    # ---- state
    def write_state(self, state: np.ndarray) -> None:
        """state: int32 [L, d] (Q11.20) into the STATE buffer, one row per layer at its stride."""
        rows = np.zeros((self.layers, self.state_stride // 4), dtype="<i4")
        rows[:, :self.d] = state
        self.xdma.dma_write(self.regs["STATE"], rows.tobytes())

    def read_state(self) -> np.ndarray:
        raw = self.xdma.dma_read(self.regs["STATE"], self.layers * self.state_stride)
        return np.frombuffer(raw, dtype="<i4").reshape(self.layers, -1)[:, :self.d].astype(np.int32)

    # ---- one decode step
    def step(self, embed_row: np.ndarray) -> np.ndarray:
        """Run the program on one embedding row (int32 [d], Q15.16) → logits int32 [vocab] (Q15.16)."""
        x = self.xdma
        x.dma_write(self.regs["IN"], np.ascontiguousarray(embed_row, dtype="<i4").tobytes())
        x.write32(R["STATUS"], regmap.STATUS_DONE | regmap.STATUS_ERROR | regmap.STATUS_MEM_ERROR)
        x.write32(R["CONTROL"], regmap.CONTROL_START | regmap.CONTROL_IRQ_ENABLE)
        status = self._wait_done()
        x.write32(R["STATUS"], regmap.STATUS_DONE | regmap.STATUS_ERROR | regmap.STATUS_MEM_ERROR)
        if status & regmap.STATUS_MEM_ERROR:
            pc = x.read32(R["ERROR_PC"])
            raise UserError(f"{x.prefix}: card memory answered the core with an AXI error response (SLVERR/DECERR) "
                            f"near program offset {pc:#x}; the logits are not valid — check that the card's memory "
                            "holds the bundle's whole memory map (mmfree deploy) and that the memory controller is up")
        if status & regmap.STATUS_ERROR:
            pc = x.read32(R["ERROR_PC"])
            raise UserError(f"{x.prefix}: the core stopped with ERROR at program offset {pc:#x} — the bundle "
                            "does not match the card's design; re-export for it")
        raw = x.dma_read(self.regs["OUT"], 4 * self.vocab)
        return np.frombuffer(raw, dtype="<i4").astype(np.int32)

    def _wait_done(self) -> int:
        x, deadline = self.xdma, time.monotonic() + self.timeout
        if self.wait == "irq":
            x.wait_event(self.timeout)
        while True:
            status = x.read32(R["STATUS"])
            if status & regmap.STATUS_DONE:
                return status
            if time.monotonic() > deadline:
                raise CardTimeout(f"{x.prefix}: the core did not signal DONE within {self.timeout:g} s "
                                  f"(STATUS {status:#x}) — check that the card holds the bundle's design and "
                                  "weights (mmfree deploy), or raise --timeout")
            time.sleep(0.0005 if self.wait == "poll" else 0.001)

    def counters(self) -> dict[str, int]:
        """The core's performance counters of the last run."""
        return {k.lower(): self.xdma.read32(R[k]) for k in ("CYCLES", "TMV_ACTIVE", "TMV_WINDOW", "INSTRET")}
