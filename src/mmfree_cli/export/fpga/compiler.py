"""Compile an integer model (quant/intspec.py names) into the core's program and weight image.

The program is one decode step: it loads the token's embedding row from IN, runs every layer and
the head exactly as `quant.intref.step` does, keeps the recurrent state in STATE and writes the
logits to OUT. Sizes (d, I, L, vocab) live only here, in the program: one build of the core runs
any model whose vectors fit its scratch and x buffer.

The weight image is a list of blocks, each starting on a 4 KiB boundary: per layer one constants
block (gains and the lower bound as int32 vectors, 64-byte aligned inside the block) and one block
per ternary matrix (image.py's row layout); then the head; the program block last.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from ...errors import UserError
from ...hardware.image import align, pack_ternary_rows, padded
from ...hardware.isa import Instr, assemble
from ...quant import intref
from ...quant.intspec import FRAC_H, FRAC_X

VEC_ALIGN = 64
"""Byte alignment of vectors inside a constants block and of per-layer state rows (≥ MEM_W/8)."""
VEC_MAX = 16
"""Scratch vectors start on a multiple of this many words: the core's element passes read rows of
VEC (≤ VEC_MAX) words."""


@dataclass(frozen=True)
class CoreParams:
    """What one build of the core can hold (the generated RTL's parameters)."""
    lanes: int = 16
    saddr_w: int = 12       # scratch: 2**saddr_w int32 words
    xaddr_w: int = 6        # x buffer: 2**xaddr_w entries of LANES int8 (K max = LANES << xaddr_w)
    vec: int = 0            # elements an element pass moves a cycle (0: one memory word, LANES/16)

    @property
    def v(self) -> int:
        return self.vec or self.lanes // 16

    @property
    def mem_w(self) -> int:
        return 2 * self.lanes


@dataclass
class Block:
    name: str
    data: bytes
    offset: int = 0
    kind: str = "const"
    shape: list = field(default_factory=list)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "offset": self.offset, "bytes": len(self.data),
                "shape": self.shape, "sha256": hashlib.sha256(self.data).hexdigest()}


@dataclass
class Compiled:
    program: list[Instr]
    blocks: list[Block]
    image: bytes
    dims: dict
    scratch: dict
    matvec_words: int

    @property
    def program_offset(self) -> int:
        return self.blocks[-1].offset


def dims_of(model: dict) -> dict:
    d = model["embed"].shape[1]
    return {"d": d, "vocab": model["embed"].shape[0], "layers": intref.num_layers(model),
            "inner": model["layers.0.down.codes"].shape[1]}


def state_stride(d: int) -> int:
    """Bytes between layers' rows in the STATE buffer."""
    return align(4 * d, VEC_ALIGN)


class _Builder:
    def __init__(self, model: dict, params: CoreParams, with_image: bool = True):
        self.m, self.p, self.with_image = model, params, with_image
        self.dims = dims_of(model)
        self.prog: list[Instr] = []
        self.blocks: list[Block] = []
        self.at = 0
        self.vec_at: dict[str, int] = {}
        self.words = 0
        self.scratch = self._scratch_map()

    # ---- layout
    def _scratch_map(self) -> dict:
        d, inner, cap = self.dims["d"], self.dims["inner"], 1 << self.p.saddr_w
        big = max(d, inner)
        regions, at = {}, 0
        for name, size in (("X", d), ("W", big), ("U", big), ("GN", big), ("YI", d), ("YF", d), ("YG", d),
                           ("H", d), ("S", big), ("P", big), ("O", d), ("Y", inner), ("Y2", inner)):
            regions[name] = at
            at += align(size, VEC_MAX)
        tile = (cap - at) // 16 * 16
        if tile < 16 or big > (self.p.lanes << self.p.xaddr_w):
            raise UserError(f"model d={d}, I={inner} does not fit this core (scratch {cap} words, "
                            f"K max {self.p.lanes << self.p.xaddr_w}) — build a larger core (--lanes/--scratch)")
        regions["T"], regions["tile"] = at, min(tile, 0xFFFF & ~15)
        return regions

    def add_block(self, name: str, data: bytes, kind: str, shape: list) -> int:
        self.at = align(self.at)
        self.blocks.append(Block(name, data, self.at, kind, shape))
        off = self.at
        self.at += len(data)
        return off

    def const_block(self, name: str, vectors: dict[str, np.ndarray]) -> None:
        data = b""
        for key, v in vectors.items():
            data = data.ljust(align(len(data), VEC_ALIGN), b"\0")
            self.vec_at[f"{name}.{key}"] = len(data)
            data += np.asarray(v, dtype="<i4").tobytes()
        off = self.add_block(name, data, "const", [len(vectors)])
        for key in vectors:
            self.vec_at[f"{name}.{key}"] += off

    def matrix_block(self, name: str, codes: np.ndarray) -> int:
        data = pack_ternary_rows(codes, self.p.lanes) if self.with_image else b""
        return self.add_block(name, data, "ternary", list(codes.shape))

    # ---- instructions
    def emit(self, op: str, sub: str | None = None, **kw) -> None:
        self.prog.append(Instr(op, sub, **kw))

    def load(self, key: str, n: int, dst: str) -> None:
        self.emit("LOAD", n=n, dst=self.scratch[dst], imm=self.vec_at[key])

    def scale_by_gain(self, src: int, n: int, gain_key: str, dst: str) -> None:
        """dst = normalize16(src)·gain (intref.apply_gain); leaves kq = its shift, ss = Σ src16²."""
        self.emit("NORM", "AMAX", n=n, a=src)
        self.load(gain_key, n, "GN")
        self.emit("NORM", "NORM16MUL", n=n, dst=self.scratch[dst], a=src, b=self.scratch["GN"])

    def bitlinear(self, src: str, prefix: str, dst: int, eps: bool = False, out_base: str | None = None,
                  dst2: int | None = None) -> None:
        """intref.bitlinear_int: the input's own RMSNorm, int8 quantiser, matvec, requantisation.
        `dst2`: rows n/2.. go there instead of after the first half (keeps both halves aligned)."""
        proj = {k: self.m[f"{prefix}.{k}"] for k in ("codes", "gain", "scale")}
        n, k = proj["codes"].shape
        w_off = self.matrix_block(f"{prefix}.codes", proj["codes"])
        self.scale_by_gain(self.scratch[src], k, f"{prefix}.gain", "U")
        if eps:
            self.emit("SCALAR", "PADDK")
            self.emit("SCALAR", "EPS")
        self.emit("SCALAR", "RSQRT")
        self.emit("NORM", "NORM16", n=k, dst=self.scratch["U"], a=self.scratch["U"])
        self.emit("SCALAR", "RECIP")
        self.emit("NORM", "QUANT", n=k, a=self.scratch["U"])
        self.emit("SCALAR", "OUTMUL", b=int(proj["scale"][1]), imm=int(proj["scale"][0]))
        wpr, tile = padded(k, self.p.lanes) // self.p.lanes, self.scratch["tile"]
        row_bytes = wpr * self.p.mem_w // 8
        step = tile if out_base else n // 2 if dst2 is not None else n
        for r0 in range(0, n, step):
            rows = min(step, n - r0)
            at = self.scratch["T"] if out_base else dst2 if dst2 is not None and r0 else dst + r0
            self.emit("MATVEC", n=rows, a=wpr, dst=at, imm=w_off + r0 * row_bytes)
            self.emit("ROW", "REQUANT", n=rows, dst=at, a=at)
            if out_base:
                self.emit("STORE", n=rows, a=at, base=out_base, imm=4 * r0)
        self.words += n * wpr

    def layer(self, l: int) -> None:
        s, d, inner, p = self.scratch, self.dims["d"], self.dims["inner"], f"layers.{l}"
        self.const_block(f"{p}.consts", {k: self.m[f"{p}.{k}"] for k in
                                          ("attn_gain", "g_gain", "mlp_gain", "lower_bound")}
                         | {f"{q}.gain": self.m[f"{p}.{q}.gain"] for q in ("i", "f", "g", "o", "gate", "down")})
        for q in ("i", "f", "g", "o", "gate", "down"):
            self.vec_at[f"{p}.{q}.gain"] = self.vec_at[f"{p}.consts.{q}.gain"]
        c = f"{p}.consts."
        # token mixer
        self.scale_by_gain(s["X"], d, c + "attn_gain", "W")
        for q, dst in (("i", "YI"), ("f", "YF"), ("g", "YG")):
            self.bitlinear("W", f"{p}.{q}", s[dst])
        self.load(c + "lower_bound", d, "GN")
        self.emit("ROW", "FGATE", n=d, dst=s["YF"], a=s["YF"], b=s["GN"])
        sh_off = l * state_stride(d)
        self.emit("LOAD", n=d, dst=s["H"], base="STATE", imm=sh_off)
        self.emit("ROW", "RECUR", n=d, dst=s["H"], a=s["YI"], b=s["YF"], c=s["H"])
        self.emit("STORE", n=d, a=s["H"], base="STATE", imm=sh_off)
        self.emit("ROW", "SILU", n=d, dst=s["S"], a=s["H"], frac=FRAC_H)
        self.emit("NORM", "AMAX", n=d, a=s["S"])
        self.emit("NORM", "NORM16", n=d, dst=s["S"], a=s["S"])
        g_shift = int(self.m[f"{p}.g_gain_shift"][0])
        self.emit("SCALAR", "PSET", imm=(-FRAC_H - g_shift) & 0xFFFFFFFF)
        self.emit("SCALAR", "PADDK")
        self.emit("NORM", "AMAX", n=d, a=s["YG"])
        self.emit("NORM", "NORM16MUL", n=d, dst=s["P"], a=s["YG"], b=s["S"])
        self.emit("SCALAR", "ZSAVE")
        self.scale_by_gain(s["P"], d, c + "g_gain", "W")
        self.emit("SCALAR", "PADDK")
        self.bitlinear("W", f"{p}.o", s["O"], eps=True)
        self.emit("ROW", "ADD", n=d, dst=s["X"], a=s["X"], b=s["O"])
        # channel mixer
        self.scale_by_gain(s["X"], d, c + "mlp_gain", "W")
        # the gate's two halves: one MATVEC when the second starts on an aligned row anyway
        self.bitlinear("W", f"{p}.gate", s["Y"], dst2=None if s["Y2"] == s["Y"] + inner else s["Y2"])
        self.emit("ROW", "SILU", n=inner, dst=s["S"], a=s["Y"], frac=FRAC_X)
        self.emit("NORM", "AMAX", n=inner, a=s["Y2"])
        self.emit("NORM", "NORM16", n=inner, dst=s["U"], a=s["Y2"])
        self.emit("SCALAR", "PSET", imm=(-2 * FRAC_X) & 0xFFFFFFFF)
        self.emit("SCALAR", "PADDK")
        self.emit("NORM", "AMAX", n=inner, a=s["S"])
        self.emit("NORM", "NORM16MUL", n=inner, dst=s["P"], a=s["S"], b=s["U"])
        self.emit("SCALAR", "PADDK")
        self.emit("SCALAR", "ZSET", imm=inner)
        self.bitlinear("P", f"{p}.down", s["O"], eps=True)
        self.emit("ROW", "ADD", n=d, dst=s["X"], a=s["X"], b=s["O"])

    def build(self) -> Compiled:
        d, s = self.dims["d"], self.scratch
        self.emit("LOAD", n=d, dst=s["X"], base="IN", imm=0)
        for l in range(self.dims["layers"]):
            self.layer(l)
        self.const_block("final.consts", {"final_gain": self.m["final_gain"],
                                          "lm_head.gain": self.m["lm_head.gain"]})
        self.vec_at["lm_head.gain"] = self.vec_at["final.consts.lm_head.gain"]
        self.scale_by_gain(s["X"], d, "final.consts.final_gain", "W")
        self.bitlinear("W", "lm_head", 0, out_base="OUT")
        self.emit("END")
        self.add_block("program", assemble(self.prog, self.p.mem_w), "program", [len(self.prog)])
        image = bytearray(align(self.at))
        for b in self.blocks:
            image[b.offset:b.offset + len(b.data)] = b.data
        return Compiled(self.prog, self.blocks, bytes(image), self.dims, s, self.words)


def compile_model(model: dict, params: CoreParams) -> Compiled:
    """The core's program and 4 KiB-aligned weight image for an integer model."""
    return _Builder(model, params).build()


def shape_model(dims: dict) -> dict:
    """An integer model with the given dims and zero weights that take no memory (zero-stride
    views): enough to compile the program of a released size (370M..2.7B) for estimates."""
    def zeros(*shape, dtype=np.int8):
        return np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape=shape, strides=(0,) * len(shape))

    d, inner, vocab = dims["d"], dims["inner"], dims["vocab"]
    model = {"embed": zeros(vocab, d, dtype=np.int32), "final_gain": np.zeros(d, np.int16)}
    shapes = {"i": (d, d), "f": (d, d), "g": (d, d), "o": (d, d), "gate": (2 * inner, d), "down": (d, inner)}

    def proj(prefix: str, n: int, k: int) -> None:
        model.update({f"{prefix}.codes": zeros(n, k), f"{prefix}.gain": np.zeros(k, np.int16),
                      f"{prefix}.scale": np.array([1 << 30, 40])})

    for l in range(dims["layers"]):
        p = f"layers.{l}"
        for key in ("attn_gain", "g_gain", "mlp_gain", "lower_bound"):
            model[f"{p}.{key}"] = np.zeros(d, np.int32)
        model[f"{p}.g_gain_shift"] = np.zeros(1, np.int64)
        for q, (n, k) in shapes.items():
            proj(f"{p}.{q}", n, k)
    proj("lm_head", vocab, d)
    return model


def compile_program(dims: dict, params: CoreParams) -> Compiled:
    """The program (no weight image) of a model of these dims: for cycle and size estimates."""
    return _Builder(shape_model(dims), params, with_image=False).build()


def fit_core(dims: dict, lanes: int | None = None) -> CoreParams:
    """The smallest build (scratch, x buffer) that holds a model of these dims, with `lanes` lanes
    (default: 16 for small models, 64 — a 128-bit memory port — from d = 512 up)."""
    lanes = lanes or (16 if dims["d"] < 512 else 64)
    if lanes not in (16, 32, 64, 128, 256):
        raise UserError(f"--lanes {lanes}: choose 16, 32, 64, 128 or 256")
    big, d, inner = (align(x, VEC_MAX) for x in (max(dims["d"], dims["inner"]), dims["d"], dims["inner"]))
    need = 5 * big + 6 * d + 2 * inner + 256     # _scratch_map plus a 256-row tile
    saddr_w = max(8, (need - 1).bit_length())
    xaddr_w = max(1, (-(-big // lanes) - 1).bit_length())
    if saddr_w > 16:
        raise UserError(f"model d={dims['d']}, I={dims['inner']} needs more scratch than the core's "
                        "16-bit addresses reach")
    return CoreParams(lanes=lanes, saddr_w=saddr_w, xaddr_w=xaddr_w)
