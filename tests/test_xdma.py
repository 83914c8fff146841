"""The XDMA transport against the emulated card's nodes: the driver's semantics (EPROTO, EINVAL,
blocking event reads), chunked page-aligned DMA, interrupt waits with timeouts, mmap'd registers."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
import time

import pytest

from conftest import small_config
from mmfree_cli.deploy import xdma as xdma_mod
from mmfree_cli.deploy.xdma import CardTimeout, Xdma
from mmfree_cli.errors import UserError
from mmfree_cli.hardware import regmap
from test_deploy import FUSE_MISSING, emulated_card, make_bundle, make_run

R = regmap.REGISTERS


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    if FUSE_MISSING:
        pytest.skip(reason=FUSE_MISSING)
    root = tmp_path_factory.mktemp("xdma")
    bundle = make_bundle(make_run(root / "run", small_config(vocab_size=260)), root / "bundle")
    with emulated_card(root / "mnt", bundle) as prefix:
        yield prefix, bundle


def oserror(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_register_node_wants_aligned_4_byte_accesses(device):
    device, bundle = device
    fd = os.open(f"{device}_user", os.O_RDWR)
    try:
        assert int.from_bytes(os.pread(fd, 4, R["MAGIC"]), "little") == regmap.MAGIC
        assert oserror(os.pread, fd, 4, 2) == errno.EPROTO
        assert oserror(os.pread, fd, 8, 0) == errno.EPROTO
        assert oserror(os.pwrite, fd, b"\1\2", R["IN_LO"]) == errno.EPROTO
        os.pwrite(fd, (0x12345678).to_bytes(4, "little"), R["IN_LO"])
        assert int.from_bytes(os.pread(fd, 4, R["IN_LO"]), "little") == 0x12345678
    finally:
        os.close(fd)
    with Xdma(device) as x:
        with pytest.raises(UserError, match="aligned 4-byte register accesses"):
            x.read32(2)


def test_dma_nodes_have_one_direction_and_chunks_reassemble(device, monkeypatch):
    device, bundle = device
    h2c, c2h = os.open(f"{device}_h2c_0", os.O_RDWR), os.open(f"{device}_c2h_0", os.O_RDWR)
    try:
        assert oserror(os.pread, h2c, 16, 0) == errno.EINVAL
        assert oserror(os.pwrite, c2h, b"abcd", 0) == errno.EINVAL
    finally:
        os.close(h2c), os.close(c2h)
    monkeypatch.setattr(xdma_mod, "CHUNK", 64 << 10)   # several chunks, each its own call
    data = os.urandom(300_001)
    with Xdma(device) as x:
        x.dma_write(4096 + 3, data)
        assert x.dma_read(4096 + 3, len(data)) == data
        staged_at = ctypes.addressof(ctypes.c_char.from_buffer(x.staging))
        assert len(x.staging) == 64 << 10 and staged_at % mmap.PAGESIZE == 0
        with pytest.raises(UserError, match="bus error"):
            x.dma_read(1 << 40, 16)     # beyond card memory


def test_event_read_blocks_until_the_interrupt(device):
    device, bundle = device
    with Xdma(device) as x:
        with pytest.raises(CardTimeout, match="no interrupt from the card within 0.3 s"):
            x.wait_event(0.3)
        x.write32(R["STATUS"], regmap.STATUS_DONE)
        got: list = []
        reader = threading.Thread(target=lambda: got.append(x.wait_event(30)))
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive() and not got            # blocked: nothing has finished
        # PROG = 0 in zeroed card memory is an END: the core finishes at once and raises IRQ 0
        for name in ("PROG", "WEIGHTS", "IN", "OUT", "STATE"):
            x.write32(R[f"{name}_LO"], 0)
        x.write32(R["CONTROL"], regmap.CONTROL_START | regmap.CONTROL_IRQ_ENABLE)
        reader.join(30)
        assert got == [1]
        assert x.read32(R["STATUS"]) & regmap.STATUS_DONE
        x.write32(R["STATUS"], regmap.STATUS_DONE)
        assert not x.read32(R["STATUS"]) & regmap.STATUS_DONE


def test_engine_refuses_a_card_without_the_bundles_weights(device):
    from mmfree_cli.engines import load_engine
    device, bundle = device
    with pytest.raises(UserError, match=r"does not hold this bundle's weights .* run `mmfree deploy"):
        load_engine("fpga", bundle, device=str(device))


def test_mmap_registers_and_missing_nodes(tmp_path):
    prefix = tmp_path / "xdma7"
    for node in ("user", "h2c_0", "c2h_0", "events_0"):
        (tmp_path / f"xdma7_{node}").write_bytes(bytes(4096))
    with Xdma(prefix, use_mmap=True) as x:
        x.write32(0x30, 0xCAFEF00D)
        assert x.read32(0x30) == 0xCAFEF00D
    assert (tmp_path / "xdma7_user").read_bytes()[0x30:0x34] == (0xCAFEF00D).to_bytes(4, "little")
    (tmp_path / "xdma7_events_0").unlink()
    with pytest.raises(UserError, match=r"xdma7_events_0: no such device node — is the XDMA driver loaded"):
        Xdma(prefix)
    with pytest.raises(UserError, match="give the node prefix"):
        Xdma(tmp_path)
