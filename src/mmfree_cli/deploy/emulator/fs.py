"""The emulated card as XDMA device nodes: a FUSE filesystem (mfusepy over libfuse3) whose files
behave like the Xilinx XDMA driver's character devices, so the unmodified host code runs on it.

    <name>_user       the core's registers: one aligned 4-byte pread/pwrite per call, EPROTO otherwise
    <name>_h2c_0      host-to-card DMA: pwrite only (EINVAL on read), file offset = card address
    <name>_c2h_0      card-to-host DMA: pread only (EINVAL on write), file offset = card address
    <name>_events_0   a 4-byte read blocks until user interrupt 0 and returns the event count

Mounted with direct_io, so every read and write reaches us with the caller's offset and size (no
page cache). The files are regular files, not device nodes: FUSE cannot serve character devices
to unprivileged mounts, and CUSE is not available everywhere; the semantics are what matters.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time

import mfusepy
from mfusepy import FuseOSError, Operations, fuse_get_context

from .golden import REG_SPACE

EVENT_SLICE_S = 0.2
"""A blocked event read re-checks for shutdown this often (an abandoned reader must not pin us)."""


def _session_exited() -> bool:
    """Whether libfuse has been told to stop (SIGTERM, SIGINT, unmount); call from a request thread."""
    lib = mfusepy._libfuse
    lib.fuse_get_session.argtypes, lib.fuse_get_session.restype = [ctypes.c_void_p], ctypes.c_void_p
    lib.fuse_session_exited.argtypes, lib.fuse_session_exited.restype = [ctypes.c_void_p], ctypes.c_int
    fuse = lib.fuse_get_context().contents.fuse
    return bool(fuse) and bool(lib.fuse_session_exited(lib.fuse_get_session(fuse)))


class XdmaNodes(Operations):
    """Serves the four nodes of one card from a backend (GoldenCard or RemoteCard)."""

    use_ns = True

    def __init__(self, card, name: str = "xdma0", no_access: bool = False):
        self.card, self.no_access = card, no_access
        self.files = {f"/{name}_user": ("user", REG_SPACE), f"/{name}_h2c_0": ("h2c", card.memory_bytes),
                      f"/{name}_c2h_0": ("c2h", card.memory_bytes), f"/{name}_events_0": ("events", 0)}
        self.stopping = threading.Event()
        self.started = time.time_ns()

    def _node(self, path: str) -> str:
        if path not in self.files:
            raise FuseOSError(errno.ENOENT)
        return self.files[path][0]

    def getattr(self, path, fh=None):
        t = self.started
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_atime": t, "st_mtime": t, "st_ctime": t}
        self._node(path)
        return {"st_mode": stat.S_IFREG | 0o666, "st_nlink": 1, "st_size": self.files[path][1],
                "st_atime": t, "st_mtime": t, "st_ctime": t}

    def readdir(self, path, fh):
        return [".", "..", *(p[1:] for p in self.files)]

    def open(self, path, flags):
        self._node(path)
        if self.no_access:
            raise FuseOSError(errno.EACCES)
        return 0

    def truncate(self, path, length, fh=None):
        self._node(path)
        return 0

    def read(self, path, size, offset, fh):
        node = self._node(path)
        if node == "user":
            self._check_reg(offset, size)
            return self.card.read_reg(offset).to_bytes(4, "little")
        if node == "c2h":
            self._check_dma(offset, size)
            return self.card.read_mem(offset, size)
        if node == "events":
            if size != 4:
                raise FuseOSError(errno.EPROTO)
            return self._wait_events().to_bytes(4, "little")
        raise FuseOSError(errno.EINVAL)  # h2c is write-only

    def write(self, path, data, offset, fh):
        node = self._node(path)
        if node == "user":
            self._check_reg(offset, len(data))
            self.card.write_reg(offset, int.from_bytes(data, "little"))
            return 4
        if node == "h2c":
            self._check_dma(offset, len(data))
            self.card.write_mem(offset, bytes(data))
            return len(data)
        raise FuseOSError(errno.EINVAL)  # c2h is read-only, events cannot be written

    @staticmethod
    def _check_reg(offset: int, size: int) -> None:
        if offset % 4 or size != 4 or offset >= REG_SPACE:
            raise FuseOSError(errno.EPROTO)

    def _check_dma(self, offset: int, size: int) -> None:
        if offset + size > self.card.memory_bytes:
            raise FuseOSError(errno.EIO)  # the AXI slave error the DMA engine would report

    def _wait_events(self) -> int:
        """Block until an interrupt, like the driver; but give up (EINTR) when the reader is
        interrupted (a signal, its process exiting: the kernel then waits for our answer, so we
        must give one; needs the `intr` mount option), its process has gone (else it would swallow
        the next interrupt) or the filesystem is shutting down (libfuse joins its workers before
        `destroy`, so a reader must not wait for that)."""
        _uid, _gid, reader_pid = fuse_get_context()
        while not (self.stopping.is_set() or _session_exited() or mfusepy._libfuse.fuse_interrupted()
                   or not os.path.exists(f"/proc/{reader_pid}")):
            count = self.card.take_events(EVENT_SLICE_S)
            if count:
                return count
        raise FuseOSError(errno.EINTR)

    def destroy(self, path):
        self.stopping.set()
        self.card.close()
