"""The core's instruction set: what the sequencer (templates/fpga/mmf_seq.v) executes.

An instruction is four little-endian 32-bit words (16 bytes), stored in a slot of
max(16, MEM_W/8) bytes so that every fetch starts on a memory word:

    w0  [3:0] opcode  [7:4] sub-op  [12:8] frac  [14:13] base  [31:16] n
    w1  [15:0] dst    [31:16] a        (scratch word addresses)
    w2  [15:0] b      [31:16] c
    w3  imm: a byte offset from the base register (LOAD / STORE / MATVEC) or a constant

Opcodes (scratch vectors are int32 words; scalar registers top, k, kq, amax, ss, r, e, recip,
mm, me live in the sequencer; every step mirrors a function of quant/intref.py):

    END                     stop; DONE (and the IRQ) once every write has landed
    LOAD   base imm n dst   scratch[dst+i] = mem32[base + imm + 4i]       (imm 4-aligned, MEM_W/8-aligned)
    STORE  base imm n a     mem32[base + imm + 4i] = scratch[a+i]
    MATVEC base imm n a dst scratch[dst+r] = Σ_k W[r,k]·x[k], n rows of a words of LANES codes at base+imm
    ROW    sub frac n dst a b c   element-wise (mmf_rowwise.v): SIGMOID SILU FGATE RECUR ADD REQUANT;
                            REQUANT takes its multiplier and shift from the mm / me registers
    NORM   AMAX     n a     top = max|A|;                        k = kfn(top)
    NORM   NORM16   n dst a D = sat16(rshift_round(A, k));        then the bookkeeping below
    NORM   NORM16MUL n dst a b  D = sat16(rshift_round(A, k))·B
                            after NORM16/NORM16MUL: ss = Σ sat16(...)², kq = k (the k used),
                            amax = top = max|D|, k = kfn(top)
    NORM   QUANT    n a     x[i] = sign(A)·((|A|·recip + 2^31) >> 32) into the x buffer (int8)
    SCALAR RSQRT            (r, e) = rsqrt_fixed(ss)
    SCALAR RECIP            recip = ceil(127·2^32 / amax) (0 when amax = 0)
    SCALAR OUTMUL b imm     (mm, me) = output_multiplier((imm, b), amax, kq, r, e)
    SCALAR PSET imm         p = imm (signed)          SCALAR PADDK   p = p + kq
    SCALAR ZSAVE            z = ss                    SCALAR ZSET imm  z = imm
    SCALAR EPS              ss = ss + eps_term(z, p)  (the RMSNorm eps of o_proj / down_proj)

kfn(t) = bit_length(t) - 15 for t > 0, else 0 (intref.normalize16's shift).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import UserError

OPCODES = {"END": 0, "LOAD": 1, "STORE": 2, "MATVEC": 3, "ROW": 4, "NORM": 5, "SCALAR": 6}
ROW_OPS = {"SIGMOID": 0, "SILU": 1, "FGATE": 2, "RECUR": 3, "ADD": 4, "REQUANT": 5}
NORM_OPS = {"AMAX": 0, "NORM16": 1, "NORM16MUL": 2, "QUANT": 3}
SCALAR_OPS = {"RSQRT": 0, "RECIP": 1, "OUTMUL": 2, "PSET": 3, "PADDK": 4, "ZSAVE": 5, "ZSET": 6, "EPS": 7}
SUB_OPS = {"ROW": ROW_OPS, "NORM": NORM_OPS, "SCALAR": SCALAR_OPS}
INSTR_BYTES = 16
FIELD_MAX = 0xFFFF


@dataclass(frozen=True)
class Instr:
    op: str
    sub: str | None = None
    n: int = 0
    dst: int = 0
    a: int = 0
    b: int = 0
    c: int = 0
    frac: int = 0
    base: str = "WEIGHTS"
    imm: int = 0

    def encode(self) -> bytes:
        from .regmap import BASES
        for name in ("n", "dst", "a", "b", "c"):
            v = getattr(self, name)
            if not 0 <= v <= FIELD_MAX:
                raise UserError(f"instruction {self.op}: field {name}={v} does not fit 16 bits — "
                                "the model is too large for this core's program format")
        if not 0 <= self.imm < 1 << 32:
            raise UserError(f"instruction {self.op}: immediate {self.imm} does not fit 32 bits")
        sub = SUB_OPS[self.op][self.sub] if self.op in SUB_OPS else 0
        w0 = OPCODES[self.op] | sub << 4 | self.frac << 8 | BASES[self.base] << 13 | self.n << 16
        return struct.pack("<4I", w0, self.dst | self.a << 16, self.b | self.c << 16, self.imm)


def decode(raw: bytes) -> Instr:
    from .regmap import BASES
    w0, w1, w2, w3 = struct.unpack("<4I", raw[:INSTR_BYTES])
    op = {v: k for k, v in OPCODES.items()}[w0 & 15]
    sub = {v: k for k, v in SUB_OPS[op].items()}[(w0 >> 4) & 15] if op in SUB_OPS else None
    base = {v: k for k, v in BASES.items()}[(w0 >> 13) & 3]
    return Instr(op, sub, n=w0 >> 16, dst=w1 & 0xFFFF, a=w1 >> 16, b=w2 & 0xFFFF, c=w2 >> 16,
                 frac=(w0 >> 8) & 31, base=base, imm=w3)


def slot_bytes(mem_w: int) -> int:
    """Bytes per instruction slot for a core with MEM_W-bit memory words."""
    return max(INSTR_BYTES, mem_w // 8)


def assemble(program: list[Instr], mem_w: int) -> bytes:
    slot = slot_bytes(mem_w)
    return b"".join(i.encode().ljust(slot, b"\0") for i in program)


def disassemble(blob: bytes, mem_w: int) -> list[Instr]:
    slot = slot_bytes(mem_w)
    return [decode(blob[i:i + slot]) for i in range(0, len(blob), slot)]
