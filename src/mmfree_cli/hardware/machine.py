"""The core's instruction set executed in numpy: the golden model of the RTL, one instruction at a
time, on a card-memory image. Every element step calls quant/intref.py, so a program that this
machine runs bit-exactly like `intref.step` holds the RTL, which is held to this machine, to the
integer reference too. The emulated card (deploy) can run bundles with it.
"""

from __future__ import annotations

import numpy as np

from ..quant import intref
from ..quant.intspec import INT8_MAX, INT16_MAX, INT16_MIN, QUANT_RECIP_SHIFT
from .image import unpack_ternary_rows
from .isa import INSTR_BYTES, Instr, decode, slot_bytes

I64 = np.int64


def kfn(top: int) -> int:
    """normalize16's shift for a vector whose max |v| is `top`."""
    return int(intref.bit_length(np.int64(top))) - 15 if top > 0 else 0


class Machine:
    """Card memory (a bytearray), the base registers, scratch, x buffer and scalar registers."""

    def __init__(self, memory: bytearray, bases: dict[str, int], lanes: int, mem_w: int,
                 scratch_words: int):
        self.mem, self.bases, self.lanes, self.mem_w = memory, bases, lanes, mem_w
        self.scratch = np.zeros(scratch_words, dtype=I64)
        self.x = np.zeros(0, dtype=I64)
        self.reg = {"top": 0, "k": 0, "kq": 0, "amax": 0, "ss": 0, "r": 0, "e": 0, "recip": 0,
                    "mm": 0, "me": 1, "p": 0, "z": 0}
        self.matvec_words = 0

    def mem32(self, addr: int, n: int) -> np.ndarray:
        return np.frombuffer(bytes(self.mem[addr:addr + 4 * n]), dtype="<i4").astype(I64)

    def run(self, prog_addr: int, max_steps: int = 1 << 20) -> int:
        """Execute from prog_addr to END; returns the instruction count."""
        slot = slot_bytes(self.mem_w)
        for count in range(max_steps):
            ins = decode(bytes(self.mem[prog_addr + count * slot:prog_addr + count * slot + INSTR_BYTES]))
            if ins.op == "END":
                return count + 1
            self.execute(ins)
        raise RuntimeError("program did not reach END")

    def execute(self, ins: Instr) -> None:
        getattr(self, f"do_{ins.op.lower()}")(ins)

    def vec(self, at: int, n: int) -> np.ndarray:
        return self.scratch[at:at + n]

    def do_load(self, i: Instr) -> None:
        self.scratch[i.dst:i.dst + i.n] = self.mem32(self.bases[i.base] + i.imm, i.n)

    def do_store(self, i: Instr) -> None:
        addr = self.bases[i.base] + i.imm
        self.mem[addr:addr + 4 * i.n] = self.vec(i.a, i.n).astype("<i4").tobytes()

    def do_matvec(self, i: Instr) -> None:
        k = i.a * self.lanes
        w = unpack_ternary_rows(bytes(self.mem[self.bases[i.base] + i.imm:]), i.n, k, self.lanes)
        x = np.zeros(k, dtype=I64)
        x[:len(self.x)] = self.x[:k]
        self.scratch[i.dst:i.dst + i.n] = intref.ternary_matvec(w, x)
        self.matvec_words += i.n * i.a

    def do_row(self, i: Instr) -> None:
        a, b, c = self.vec(i.a, i.n), self.vec(i.b, i.n), self.vec(i.c, i.n)
        if i.sub == "SIGMOID":
            y = intref.sigmoid_q(a, i.frac)
        elif i.sub == "SILU":
            y = intref.silu_q(a, i.frac)
        elif i.sub == "FGATE":
            y = intref.forget_gate(a, b)
        elif i.sub == "RECUR":
            y = intref.recurrence(c, b, intref.input_gate(a, b))
        elif i.sub == "ADD":
            y = intref.sat32(a + b)
        else:
            y = intref.requantize(a, self.reg["mm"], self.reg["me"])
        self.scratch[i.dst:i.dst + i.n] = y

    def do_norm(self, i: Instr) -> None:
        r = self.reg
        a = self.vec(i.a, i.n)
        if i.sub == "AMAX":
            r["top"] = int(np.abs(a).max()) if i.n else 0
            r["k"] = kfn(r["top"])
        elif i.sub in ("NORM16", "NORM16MUL"):
            d16 = np.clip(intref.rshift_round(a, r["k"]), INT16_MIN, INT16_MAX)
            d = d16 * self.vec(i.b, i.n) if i.sub == "NORM16MUL" else d16
            r["ss"] = int((d16 * d16).sum())
            r["kq"] = r["k"]
            r["top"] = r["amax"] = int(np.abs(d).max()) if i.n else 0
            r["k"] = kfn(r["top"])
            self.scratch[i.dst:i.dst + i.n] = d
        else:  # QUANT
            mag = (np.abs(a) * r["recip"] + (I64(1) << (QUANT_RECIP_SHIFT - 1))) >> QUANT_RECIP_SHIFT
            self.x = np.sign(a) * mag

    def do_scalar(self, i: Instr) -> None:
        r = self.reg
        if i.sub == "RSQRT":
            rr, e = intref.rsqrt_fixed(np.int64(r["ss"]))
            r["r"], r["e"] = int(rr), int(e)
        elif i.sub == "RECIP":
            a = r["amax"]  # ceil(127·2^32 / a), as intref.quantize_int8: exact ties round away from zero
            r["recip"] = ((INT8_MAX << QUANT_RECIP_SHIFT) + a - 1) // a if a > 0 else 0
        elif i.sub == "OUTMUL":
            mm, me = intref.output_multiplier((i.imm, i.b), r["amax"], r["kq"], r["r"], r["e"])
            r["mm"], r["me"] = int(mm), int(me)
        elif i.sub == "PSET":
            r["p"] = i.imm - (1 << 32) if i.imm >= 1 << 31 else i.imm
        elif i.sub == "PADDK":
            r["p"] += r["kq"]
        elif i.sub == "ZSAVE":
            r["z"] = r["ss"]
        elif i.sub == "ZSET":
            r["z"] = i.imm
        else:  # EPS
            r["ss"] += int(intref.eps_term(np.int64(r["z"]), np.int64(r["p"])))

