"""`--bitstream FILE`: is FILE a Xilinx bitstream built from this bundle?

A .bit file is a header of tagged fields, then the configuration data (big-endian throughout):

    00 09  0f f0 0f f0 0f f0 0f f0 00  00 01     preamble (a 9-byte field, then the count 1)
    'a' u16 len  design name, NUL-terminated     Vivado appends ";UserID=0X........;Version=YYYY.N"
    'b' u16 len  part name                       e.g. the device and package it was built for
    'c' u16 len  date, 'd' u16 len  time
    'e' u32 len  configuration data: padding, the bus-width pattern, then the sync word AA 99 55 66

The device ignores everything before the sync word, so a file without one configures nothing.
Beside the bitstream, vivado/build.tcl writes FILE.json (the sidecar): the design ID it was built
from, the core clock and the timing result. A bitstream is accepted when the header parses, the
data is as long as the header says, the sync word is there, the part is the board's, the USERID
(when Vivado wrote one) and the sidecar's design ID are the bundle's, and timing was met.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError

PREAMBLE = bytes.fromhex("0009 0ff00ff00ff00ff000 0001")
SYNC_WORD = bytes.fromhex("aa995566")
SYNC_WITHIN = 1024
"""Bytes of configuration data the sync word must appear in (it follows a few padding words)."""
FIX = "build it with the bundle's vivado/build.tcl, which writes FILE and FILE.json"


@dataclass
class BitHeader:
    design: str
    part: str
    date: str
    time: str
    data_offset: int
    data_bytes: int

    @property
    def user_id(self) -> str | None:
        """The USERID Vivado wrote into the design field (8 hex digits, lower case), if any."""
        for item in self.design.split(";"):
            key, _, value = item.partition("=")
            if key.strip().lower() == "userid" and value.lower().startswith("0x"):
                return value[2:].lower().rjust(8, "0")
        return None


def parse_header(raw: bytes, name: str) -> BitHeader:
    """The header fields of a .bit file, or a one-line refusal naming what is wrong."""
    if not raw.startswith(PREAMBLE):
        raise UserError(f"--bitstream {name}: not a Xilinx bitstream (no .bit header) — {FIX}")
    at, fields = len(PREAMBLE), {}
    for key in "abcd":
        if raw[at:at + 1] != key.encode() or at + 3 > len(raw):
            raise UserError(f"--bitstream {name}: .bit header field '{key}' missing — the file is truncated "
                            f"or not a Vivado bitstream; {FIX}")
        (n,) = struct.unpack(">H", raw[at + 1:at + 3])
        if at + 3 + n > len(raw):
            raise UserError(f"--bitstream {name}: truncated inside the .bit header — copy the whole file again")
        fields[key] = raw[at + 3:at + 3 + n].rstrip(b"\0").decode("ascii", "replace")
        at += 3 + n
    if raw[at:at + 1] != b"e" or at + 5 > len(raw):
        raise UserError(f"--bitstream {name}: truncated inside the .bit header — copy the whole file again")
    (n,) = struct.unpack(">I", raw[at + 1:at + 5])
    return BitHeader(fields["a"], fields["b"], fields["c"], fields["d"], at + 5, n)


def read_sidecar(bit: Path) -> dict:
    path = bit.with_name(bit.name + ".json")
    if not path.is_file():
        raise UserError(f"--bitstream {bit}: no sidecar {path.name} beside it — {FIX}")
    try:
        side = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--bitstream {bit}: sidecar {path.name} is not valid JSON ({e}) — {FIX}") from None
    if not isinstance(side, dict) or "design_id" not in side:
        raise UserError(f"--bitstream {bit}: sidecar {path.name} has no design_id — {FIX}")
    return side


def check(bit: Path, design_id: str, device: str | None = None) -> dict:
    """Refuse (one line) unless `bit` is a complete Xilinx bitstream of design `design_id`;
    returns what the manifest records about it."""
    bit = Path(bit)
    raw = bit.read_bytes()
    head = parse_header(raw, str(bit))
    have = len(raw) - head.data_offset
    if have < head.data_bytes:
        raise UserError(f"--bitstream {bit}: truncated — the header promises {head.data_bytes} bytes of "
                        f"configuration data, the file has {have}; copy the whole file again")
    if SYNC_WORD not in raw[head.data_offset:head.data_offset + SYNC_WITHIN]:
        raise UserError(f"--bitstream {bit}: no sync word (AA995566) in the configuration data — "
                        f"not a bitstream a Xilinx FPGA accepts; {FIX}")
    if device and device.lower() not in head.part.lower():
        raise UserError(f"--bitstream {bit}: built for part {head.part}, not this board's {device} — "
                        "build it from this bundle's vivado/ for the board you give with --board")
    side = read_sidecar(bit)
    if str(side["design_id"]).lower() != design_id.lower():
        raise UserError(f"--bitstream {bit}: its sidecar says design {side['design_id']}, this bundle is "
                        f"{design_id} — build the bitstream from this bundle's vivado/, or export the model "
                        "it was built from")
    if head.user_id is not None and head.user_id not in (design_id.lower(), "ffffffff"):
        raise UserError(f"--bitstream {bit}: its header's USERID is {head.user_id}, this bundle is {design_id} "
                        "— the sidecar belongs to another bitstream; rebuild with vivado/build.tcl")
    if side.get("bytes") is not None and int(side["bytes"]) != len(raw):
        raise UserError(f"--bitstream {bit}: the sidecar describes a {side['bytes']}-byte file, this one has "
                        f"{len(raw)} bytes — the two do not belong together; rebuild with vivado/build.tcl")
    if side.get("timing_met") is False:
        raise UserError(f"--bitstream {bit}: the sidecar says timing was not met — see vivado/README.md, "
                        "'When timing fails'")
    return {"design": head.design, "part": head.part, "date": f"{head.date} {head.time}",
            "user_id": head.user_id, "core_clock_mhz": side.get("core_clock_mhz"),
            "vivado": side.get("vivado"), "timing_met": side.get("timing_met")}
