"""The emulated card's hardware: the core's register file and card memory, running programs on the
numpy golden machine (hardware/machine.py), which is bit-exact with `quant.intref`.

Registers behave as templates/fpga/mmf_regs.v does (regmap.py is the contract): START is ignored
while BUSY, DONE and ERROR are sticky until written 1, the IRQ line is DONE & IRQ_ENABLE. A run
happens on its own thread, so BUSY is visible and the host really has to wait. The emulator has no
clock: CYCLES and TMV_WINDOW read 0; INSTRET and TMV_ACTIVE (weight words consumed) are exact.

Faults, for tests of the host side: `hang` (START sets BUSY and nothing ever finishes) and
`flip-bit:ADDR` (the first DMA write that covers card address ADDR lands with bit 0 of that byte
flipped, as a bad link would deliver it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ...errors import UserError
from ...hardware import regmap
from ...hardware.machine import Machine

R = regmap.REGISTERS
REG_SPACE = 0x1000
"""Bytes of the core's AXI-Lite register window (12 address bits); reads elsewhere give 0."""
_ADDRESS_REGS = ("WEIGHTS", "PROG", "IN", "OUT", "STATE")


@dataclass(frozen=True)
class Design:
    """What the emulated FPGA is programmed with: the build's id and parameters."""
    design_id: int
    lanes: int
    saddr_w: int
    xaddr_w: int

    @property
    def caps(self) -> int:
        return self.lanes | self.saddr_w << 16 | self.xaddr_w << 24

    @classmethod
    def from_manifest(cls, manifest: dict, design_id: int | None = None) -> Design:
        p = manifest["rtl"]["parameters"]
        did = int(manifest["design_id"], 16) if design_id is None else design_id
        return cls(did, int(p["LANES"]), int(p["SADDR_W"]), int(p["XADDR_W"]))


@dataclass
class Faults:
    hang: bool = False
    flip_bit_at: int | None = None
    no_access: bool = False
    flipped: list = field(default_factory=list)

    @classmethod
    def parse(cls, specs: list[str]) -> Faults:
        faults = cls()
        for spec in specs:
            name, _, arg = spec.partition(":")
            if name == "hang" and not arg:
                faults.hang = True
            elif name == "no-access" and not arg:
                faults.no_access = True
            elif name == "flip-bit" and arg:
                try:
                    faults.flip_bit_at = int(arg, 0)
                except ValueError:
                    raise UserError(f"--fault {spec}: ADDR must be a number, e.g. flip-bit:0x2000") from None
            else:
                raise UserError(f"--fault {spec}: unknown fault — choose hang, no-access or flip-bit:ADDR")
        return faults


class GoldenCard:
    """Card memory plus the core, driven through read_reg/write_reg/read_mem/write_mem."""

    def __init__(self, design: Design, memory_bytes: int, faults: Faults | None = None):
        self.design, self.faults = design, faults or Faults()
        self.memory = bytearray(memory_bytes)
        self.lock = threading.Condition()
        self.addr = {name: 0 for name in _ADDRESS_REGS}
        self.irq_enable = self.busy = self.done = self.error = False
        self.error_pc = self.instret = self.tmv_active = 0
        self.events = 0
        self.closed = False

    @property
    def memory_bytes(self) -> int:
        return len(self.memory)

    # ---- registers (called with aligned 4-byte offsets only; the filesystem checks that)
    def read_reg(self, offset: int) -> int:
        with self.lock:
            fixed = {R["MAGIC"]: regmap.MAGIC, R["VERSION"]: regmap.VERSION,
                     R["DESIGN_ID"]: self.design.design_id, R["CAPS"]: self.design.caps,
                     R["CONTROL"]: int(self.irq_enable) << 1,
                     R["STATUS"]: int(self.busy) | int(self.done) << 1 | int(self.error) << 2,
                     R["ERROR_PC"]: self.error_pc, R["INSTRET"]: self.instret,
                     R["TMV_ACTIVE"]: self.tmv_active, R["CYCLES"]: 0, R["TMV_WINDOW"]: 0}
            if offset in fixed:
                return fixed[offset] & 0xFFFFFFFF
            for name in _ADDRESS_REGS:
                if offset == R[f"{name}_LO"]:
                    return self.addr[name] & 0xFFFFFFFF
                if offset == R[f"{name}_HI"]:
                    return self.addr[name] >> 32
            return 0

    def write_reg(self, offset: int, value: int) -> None:
        with self.lock:
            if offset == R["CONTROL"]:
                self.irq_enable = bool(value & regmap.CONTROL_IRQ_ENABLE)
                if value & regmap.CONTROL_START and not self.busy:
                    self.busy = True
                    if not self.faults.hang:
                        threading.Thread(target=self._run, daemon=True).start()
            elif offset == R["STATUS"]:
                self.done = self.done and not value & regmap.STATUS_DONE
                self.error = self.error and not value & regmap.STATUS_ERROR
            for name in _ADDRESS_REGS:
                if offset == R[f"{name}_LO"]:
                    self.addr[name] = (self.addr[name] & ~0xFFFFFFFF) | value
                elif offset == R[f"{name}_HI"]:
                    self.addr[name] = (self.addr[name] & 0xFFFFFFFF) | value << 32
            self._raise_irq_if(False)

    def _raise_irq_if(self, was_high: bool) -> None:
        """Count a user interrupt on each rising edge of DONE & IRQ_ENABLE (lock held)."""
        if self.done and self.irq_enable and not was_high:
            self.events += 1
            self.lock.notify_all()

    def _run(self) -> None:
        d = self.design
        machine = Machine(self.memory, {k: self.addr[k] for k in ("WEIGHTS", "IN", "OUT", "STATE")},
                          d.lanes, 2 * d.lanes, 1 << d.saddr_w)
        error_pc = None
        try:
            count = machine.run(self.addr["PROG"])
        except Exception:  # an illegal instruction or address: the core's ERROR, not the emulator's crash
            count, error_pc = 0, 0
        with self.lock:
            was_high = self.done and self.irq_enable
            self.instret, self.tmv_active = count, machine.matvec_words
            if error_pc is not None:
                self.error, self.error_pc = True, error_pc
            self.busy, self.done = False, True
            self._raise_irq_if(was_high)

    # ---- memory (DMA)
    def read_mem(self, addr: int, n: int) -> bytes:
        return bytes(self.memory[addr:addr + n])

    def write_mem(self, addr: int, data: bytes) -> None:
        at = self.faults.flip_bit_at
        if at is not None and addr <= at < addr + len(data) and not self.faults.flipped:
            data = bytearray(data)
            data[at - addr] ^= 1
            self.faults.flipped.append(at)
        self.memory[addr:addr + len(data)] = data

    # ---- interrupts
    def take_events(self, timeout: float) -> int:
        """Wait up to `timeout` s for user interrupts; return how many came (0: none) and clear."""
        with self.lock:
            self.lock.wait_for(lambda: self.events or self.closed, timeout)
            count, self.events = self.events, 0
            return count

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()
