"""The card's register map, card memory map and host protocol: the one contract between the RTL
(templates/fpga/mmf_regs.v), the exporter, `mmfree deploy` and the emulated card.

Registers (AXI-Lite slave, reached over XDMA's `/dev/xdma0_user`: 32-bit, one aligned 4-byte access
per call). 64-bit addresses are two registers, low word first; the core uses the low ADDR_W bits.

    0x000 MAGIC         RO  0x4D4D4631 ("MMF1"): an mmfree core is there
    0x004 VERSION       RO  (major << 16) | minor of this register map
    0x008 DESIGN_ID     RO  32-bit id of the RTL build (its parameters and sources); deploy refuses a
                            bundle whose manifest `design_id` differs
    0x00C CAPS          RO  [15:0] LANES, [23:16] SADDR_W, [31:24] XADDR_W
    0x010 CONTROL       RW  bit 0 START (write 1: run the program once; reads 0), bit 1 IRQ_ENABLE
    0x014 STATUS        RW  bit 0 BUSY, bit 1 DONE (sticky; write 1 to clear), bit 2 ERROR (sticky,
                            write 1 to clear: an illegal instruction or an AXI error response
                            stopped the run; DONE is set with it), bit 3 MEM_ERROR (sticky, write 1
                            to clear: the cause was card memory answering a read (RRESP) or a
                            write (BRESP) with SLVERR/DECERR)
    0x018 ERROR_PC      RO  byte offset (from PROG) of the instruction that raised ERROR
    0x020 WEIGHTS_LO/HI RW  card address of weights.bin (the program addresses blocks relative to it)
    0x028 PROG_LO/HI    RW  card address of the program (block `program` of weights.bin)
    0x030 IN_LO/HI      RW  card address of the embedding-in buffer: d int32 (Q15.16), one token
    0x038 OUT_LO/HI     RW  card address of the logits-out buffer: vocab int32 (Q15.16)
    0x040 STATE_LO/HI   RW  card address of the recurrent state: L·d int32 (Q11.20), zero = empty
    0x050 CYCLES        RO  clock cycles of the last run (START to DONE)
    0x054 TMV_ACTIVE    RO  cycles the matrix-vector unit accepted a weight word, last run
    0x058 TMV_WINDOW    RO  cycles from each matvec's first weight word to its last, summed, last run
    0x05C INSTRET       RO  instructions retired, last run

Host protocol for one decode step (the host only fetches the embedding row and samples):

    once:   check MAGIC, VERSION and DESIGN_ID; write weights.bin at WEIGHTS (h2c); write the
            address registers; zero the state buffer (h2c) to start a sequence
    a token: write the token's embedding row (int32 [d], from `embed` in the bundle) to IN (h2c);
            write CONTROL = START | IRQ_ENABLE; wait for user IRQ 0 (`/dev/xdma0_events_0`) or
            poll STATUS until DONE; write STATUS = DONE to clear it (and the IRQ); read logits
            (int32 [vocab], Q15.16) from OUT (c2h); sample on the host.
    ERROR set: the run stopped at ERROR_PC; the bundle does not match the card — re-export.
    ERROR and MEM_ERROR set: a card-memory access failed; OUT holds no valid logits.

The IRQ line (user IRQ 0) is high while STATUS.DONE and CONTROL.IRQ_ENABLE are both set.
"""

from __future__ import annotations

MAGIC = 0x4D4D4631
VERSION = (1 << 16) | 0

REGISTERS: dict[str, int] = {
    "MAGIC": 0x000, "VERSION": 0x004, "DESIGN_ID": 0x008, "CAPS": 0x00C,
    "CONTROL": 0x010, "STATUS": 0x014, "ERROR_PC": 0x018,
    "WEIGHTS_LO": 0x020, "WEIGHTS_HI": 0x024, "PROG_LO": 0x028, "PROG_HI": 0x02C,
    "IN_LO": 0x030, "IN_HI": 0x034, "OUT_LO": 0x038, "OUT_HI": 0x03C,
    "STATE_LO": 0x040, "STATE_HI": 0x044,
    "CYCLES": 0x050, "TMV_ACTIVE": 0x054, "TMV_WINDOW": 0x058, "INSTRET": 0x05C,
}
CONTROL_START = 1 << 0
CONTROL_IRQ_ENABLE = 1 << 1
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_MEM_ERROR = 1 << 3
IRQ_DONE = 0
"""The XDMA user interrupt the core raises when a run is done."""

# Address bases an instruction's memory operand is relative to (field `base` of LOAD/STORE/MATVEC).
BASES = {"WEIGHTS": 0, "IN": 1, "OUT": 2, "STATE": 3}


def card_memory_map(weights_bytes: int, d: int, vocab: int, layers: int, align: int = 4096,
                    state_stride: int | None = None) -> dict[str, dict]:
    """Where everything sits in card memory for one model: weights.bin first, then the buffers.

    Every region starts on a 4 KiB boundary; layer l's state row starts at STATE + l·state_stride
    (default 4·d bytes). Returned as {region: {"offset", "bytes", "what"}}.
    """
    def up(n: int) -> int:
        return -(-n // align) * align

    regions, at = {}, 0
    for name, size, what in (
        ("weights", weights_bytes, "weights.bin: program, tables, constants, ternary matrices"),
        ("state", layers * (state_stride or 4 * d),
         "recurrent state, int32 [L, d] Q11.20, rows `row_stride` bytes apart; zero it to start a sequence"),
        ("in", 4 * d, "embedding row of the current token, int32 [d] Q15.16 (host writes)"),
        ("out", 4 * vocab, "logits, int32 [vocab] Q15.16 (host reads after DONE)"),
    ):
        regions[name] = {"offset": at, "bytes": size, "what": what}
        at = up(at + size)
    regions["end"] = {"offset": at, "bytes": 0, "what": "card memory needed"}
    return regions


def register_table() -> list[dict]:
    """The register map as data, for the bundle manifest."""
    return [{"name": k, "offset": v} for k, v in REGISTERS.items()]
