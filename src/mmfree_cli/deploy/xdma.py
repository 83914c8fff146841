"""The host side of Xilinx's XDMA driver: registers, DMA and user interrupts of one card.

`--device /dev/xdma0` is a prefix, not a node (docs/design.md §5):

    /dev/xdma0_user       AXI-Lite registers: one aligned 32-bit pread/pwrite per call (the driver
                          answers EPROTO otherwise), or mmap the BAR (`use_mmap`)
    /dev/xdma0_h2c_N      DMA to the card: pwrite with file offset = card AXI address
    /dev/xdma0_c2h_N      DMA from the card: pread with file offset = card AXI address
    /dev/xdma0_events_N   a 4-byte read blocks until user interrupt N and returns the event count

The driver does not advance the offset and moves at most 0x7ffff000 bytes a call, so transfers
are cut into chunks staged in page-aligned buffers (anonymous mmaps) that the driver can pin
without a bounce copy. Every failure becomes one UserError naming the node and the likely cause.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
from pathlib import Path

from ..errors import UserError

MAX_CALL = 0x7FFFF000
"""The XDMA driver's limit on one read/write call (bytes)."""
CHUNK = 8 << 20
"""Bytes per DMA call we issue: a reused page-aligned staging buffer, well below MAX_CALL."""
BAR_MAP_BYTES = 0x1000
NODES = ("user", "h2c", "c2h", "events")


class CardTimeout(UserError):
    """The card did not raise its interrupt in time."""


def node_paths(prefix: str | Path, channel: int = 0) -> dict[str, Path]:
    prefix = str(prefix)
    return {"user": Path(f"{prefix}_user"), "h2c": Path(f"{prefix}_h2c_{channel}"),
            "c2h": Path(f"{prefix}_c2h_{channel}"), "events": Path(f"{prefix}_events_{channel}")}


def _open(path: Path, flags: int, prefix: str) -> int:
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{path}: no such device node — is the XDMA driver loaded (`lsmod | grep xdma`) "
                        f"and the card programmed and enumerated (`lspci -d 10ee:`)? --device takes the "
                        f"prefix of the nodes, e.g. /dev/xdma0 for {prefix}_user. No card? `mmfree fpga-emulator "
                        f"start /tmp/card` serves an emulated one at --device /tmp/card/xdma0") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied — run as root or give your user access to the XDMA "
                        "nodes (a udev rule: KERNEL==\"xdma*\", MODE=\"0666\")") from None
    except OSError as e:
        raise UserError(f"{path}: cannot open ({e.strerror})") from None


class Xdma:
    """Open nodes of one card: `read32`/`write32`, `dma_write`/`dma_read`, `wait_event`."""

    def __init__(self, prefix: str | Path, channel: int = 0, use_mmap: bool = False):
        self.prefix = str(prefix)
        self.paths = node_paths(prefix, channel)
        if Path(self.prefix).is_dir() or self.prefix.endswith("/"):
            raise UserError(f"--device {self.prefix}: give the node prefix, e.g. /dev/xdma0 (not a directory)")
        modes = {"user": os.O_RDWR, "h2c": os.O_WRONLY, "c2h": os.O_RDONLY, "events": os.O_RDONLY}
        self.fds: dict[str, int] = {}
        try:
            for node in NODES:
                self.fds[node] = _open(self.paths[node], modes[node], self.prefix)
        except UserError:
            self.close()
            raise
        self.bar = self._map_bar() if use_mmap else None
        self.staging = mmap.mmap(-1, CHUNK)   # page-aligned, reused for every chunk
        self._event_reader: tuple[threading.Thread, list] | None = None

    def _map_bar(self) -> mmap.mmap:
        try:
            return mmap.mmap(self.fds["user"], BAR_MAP_BYTES)
        except OSError as e:
            raise UserError(f"{self.paths['user']}: mmap failed ({e.strerror}) — use pread/pwrite "
                            "register access instead (Xdma(..., use_mmap=False), the default)") from None

    def _fail(self, node: str, what: str, e: OSError) -> UserError:
        hint = {errno.EPROTO: "the driver wants aligned 4-byte register accesses",
                errno.EINVAL: "wrong direction or size for this node",
                errno.EIO: "the card answered with a bus error — is the address inside card memory?"}
        return UserError(f"{self.paths[node]}: {what} failed ({e.strerror}) — "
                         f"{hint.get(e.errno, 'check the card and the driver (dmesg)')}")

    # ---- registers
    def read32(self, offset: int) -> int:
        if self.bar is not None:
            return struct.unpack_from("<I", self.bar, offset)[0]
        try:
            data = os.pread(self.fds["user"], 4, offset)
        except OSError as e:
            raise self._fail("user", f"register read at {offset:#x}", e) from None
        if len(data) != 4:
            raise UserError(f"{self.paths['user']}: short register read at {offset:#x} ({len(data)} bytes)")
        return struct.unpack("<I", data)[0]

    def write32(self, offset: int, value: int) -> None:
        if self.bar is not None:
            struct.pack_into("<I", self.bar, offset, value & 0xFFFFFFFF)
            return
        try:
            os.pwrite(self.fds["user"], struct.pack("<I", value & 0xFFFFFFFF), offset)
        except OSError as e:
            raise self._fail("user", f"register write at {offset:#x}", e) from None

    # ---- DMA
    def dma_write(self, addr: int, data: bytes | memoryview) -> None:
        """Copy `data` to card address `addr` (h2c), in page-aligned chunks."""
        view, done = memoryview(data).cast("B"), 0
        while done < len(view):
            n = min(CHUNK, len(view) - done)
            self.staging[:n] = view[done:done + n]
            sent = 0
            while sent < n:
                try:
                    k = os.pwrite(self.fds["h2c"], memoryview(self.staging)[sent:n], addr + done + sent)
                except OSError as e:
                    raise self._fail("h2c", f"DMA write of {n} bytes at {addr + done:#x}", e) from None
                if k <= 0:
                    raise UserError(f"{self.paths['h2c']}: DMA write at {addr + done + sent:#x} made no progress")
                sent += k
            done += n

    def dma_read(self, addr: int, n: int) -> bytes:
        """Read `n` bytes from card address `addr` (c2h), in page-aligned chunks."""
        out, done = bytearray(n), 0
        while done < n:
            want = min(CHUNK, n - done)
            got = 0
            while got < want:
                try:
                    k = os.preadv(self.fds["c2h"], [memoryview(self.staging)[got:want]], addr + done + got)
                except OSError as e:
                    raise self._fail("c2h", f"DMA read of {want} bytes at {addr + done:#x}", e) from None
                if k <= 0:
                    raise UserError(f"{self.paths['c2h']}: DMA read at {addr + done + got:#x} returned no data")
                got += k
            out[done:done + want] = self.staging[:want]
            done += want
        return bytes(out)

    # ---- interrupts
    def wait_event(self, timeout: float) -> int:
        """Block until the card raises the user interrupt (returns the event count) or raise
        CardTimeout after `timeout` seconds. The driver's read has no timeout of its own, so it runs
        on a helper thread; after a timeout that read stays pending and the next wait takes it
        over, so no interrupt is lost to an abandoned reader."""
        if self._event_reader is None:
            result: list = []

            def reader():
                try:
                    result.append(struct.unpack("<I", os.read(self.fds["events"], 4))[0])
                except OSError as e:
                    result.append(e)
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            self._event_reader = (thread, result)
        thread, result = self._event_reader
        thread.join(timeout)
        if not result:
            raise CardTimeout(f"{self.paths['events']}: no interrupt from the card within {timeout:g} s — "
                              "the core did not finish; check that the card holds the bundle's design "
                              "(mmfree deploy) or raise --timeout")
        self._event_reader = None
        if isinstance(result[0], OSError):
            raise self._fail("events", "interrupt wait", result[0])
        return result[0]

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        if getattr(self, "bar", None) is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Xdma:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
