"""A card served by another process over a Unix socket — how the RTL simulation (a cocotb
testbench running the core in Icarus) sits behind the emulated XDMA nodes.

The wire protocol is one request, one reply, in order:

    request  <B op> <Q addr> <Q arg> [payload]     little-endian; MWRITE carries `arg` payload bytes
    reply    <B status> <Q value> [payload]        status 0 = ok, else an errno; MREAD returns `value` bytes

    R32 addr          → value = the register          W32 addr arg   register = arg
    MREAD addr n      → n bytes of card memory        MWRITE addr n  n bytes follow
    EVENTS            → value = user interrupts since the last EVENTS (cleared)
    INFO              → value = card memory bytes      QUIT           the server stops
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from ...errors import UserError

REQUEST = struct.Struct("<BQQ")
REPLY = struct.Struct("<BQ")
OPS = {"R32": 1, "W32": 2, "MREAD": 3, "MWRITE": 4, "EVENTS": 5, "INFO": 6, "QUIT": 7}
OP_NAMES = {v: k for k, v in OPS.items()}
EVENT_POLL_S = 0.005


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("card server closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_request(sock: socket.socket) -> tuple[str, int, int, bytes]:
    """Server side: (op name, addr, arg, payload) of the next request."""
    op, addr, arg = REQUEST.unpack(recv_exact(sock, REQUEST.size))
    payload = recv_exact(sock, arg) if op == OPS["MWRITE"] else b""
    return OP_NAMES.get(op, "?"), addr, arg, payload


def send_reply(sock: socket.socket, value: int = 0, payload: bytes = b"", status: int = 0) -> None:
    sock.sendall(REPLY.pack(status, value) + payload)


class RemoteCard:
    """The backend interface of GoldenCard, forwarded to a card server at a Unix socket path."""

    def __init__(self, path: str, connect_timeout: float = 60.0):
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise UserError(f"--connect {path}: no card server answers there — start it first "
                                    "(e.g. the RTL simulation bridge)") from None
                time.sleep(0.1)
        self.lock = threading.Lock()
        self.closed = False
        self.memory_bytes = self._call("INFO")[0]

    def _call(self, op: str, addr: int = 0, arg: int = 0, payload: bytes = b"") -> tuple[int, bytes]:
        with self.lock:
            self.sock.sendall(REQUEST.pack(OPS[op], addr, arg) + payload)
            status, value = REPLY.unpack(recv_exact(self.sock, REPLY.size))
            if status:
                raise OSError(status, f"card server: {op} failed")
            return value, (recv_exact(self.sock, value) if op == "MREAD" else b"")

    def read_reg(self, offset: int) -> int:
        return self._call("R32", offset)[0]

    def write_reg(self, offset: int, value: int) -> None:
        self._call("W32", offset, value)

    def read_mem(self, addr: int, n: int) -> bytes:
        return self._call("MREAD", addr, n)[1]

    def write_mem(self, addr: int, data: bytes) -> None:
        self._call("MWRITE", addr, len(data), data)

    def take_events(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.closed:
            count = self._call("EVENTS")[0]
            if count or time.monotonic() >= deadline:
                return count
            time.sleep(EVENT_POLL_S)
        return 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._call("QUIT")
        except OSError:
            pass
        self.sock.close()
