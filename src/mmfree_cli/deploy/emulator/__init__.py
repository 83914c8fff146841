"""`mmfree fpga-emulator start DIR`: an emulated mmfree card behind XDMA-like device nodes.

The card is "programmed" with a bundle's design (its DESIGN_ID and core parameters, default: the
newest fpga export) and runs programs on the bit-exact golden machine (golden.py), or forwards
everything to a card server such as the RTL simulation (remote.py, `--connect`). The nodes appear
in DIR (fs.py), so `--device DIR/xdma0` stands in for `/dev/xdma0`. Runs in the foreground;
Ctrl-C or SIGTERM unmounts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ...errors import UserError

MEMORY_ROUND = 1 << 20


def _mount_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        busy = os.path.ismount(directory) or any(directory.iterdir())
    except OSError as e:
        raise UserError(f"{directory}: {e.strerror} — a stale mount? run `fusermount3 -u {directory}`") from None
    if busy:
        raise UserError(f"{directory}: not an empty directory (or already mounted) — give an empty one")
    return directory


def golden_backend(bundle: Path | None, memory: int | None, design_id: str | None, faults: list[str]):
    """A GoldenCard programmed with `bundle`'s design, memory sized for it unless given."""
    from ...formats.fpga import Bundle
    from ...paths import latest_export
    from .golden import Design, Faults, GoldenCard
    bundle = Path(bundle) if bundle else latest_export("fpga")
    manifest = Bundle.open(bundle).manifest  # format, version and every file's sha256 checked
    try:
        did = None if design_id is None else int(design_id, 16)
    except ValueError:
        raise UserError(f"--design-id {design_id}: give 8 hex digits, e.g. deadbeef") from None
    need = manifest["card_memory_map"]["end"]["offset"]
    size = memory or -(-need // MEMORY_ROUND) * MEMORY_ROUND
    return GoldenCard(Design.from_manifest(manifest, did), size, Faults.parse(faults)), bundle


def start(directory: Path, bundle: Path | None = None, name: str = "xdma0", memory: int | None = None,
          design_id: str | None = None, faults: list[str] = (), connect: str | None = None) -> None:
    """Mount the emulated card's nodes in `directory` and serve them until interrupted."""
    try:
        from mfusepy import FUSE
    except (ImportError, OSError) as e:
        raise UserError(f"FUSE is not available ({e}) — install fuse3 (apt-get install fuse3) "
                        "and mfusepy (pip install mfusepy)") from None
    from .fs import XdmaNodes
    directory = _mount_dir(Path(directory))
    from .golden import Faults
    fault_set = Faults.parse(list(faults))
    if connect:
        from .remote import RemoteCard
        card, what = RemoteCard(connect), f"card server at {connect}"
    else:
        card, used = golden_backend(bundle, memory, design_id, list(faults))
        what = f"golden machine, design {card.design.design_id:08x} from {used}"
    nodes = XdmaNodes(card, name, no_access=fault_set.no_access)

    mounted = []

    def announce(_path):
        mounted.append(True)
        print(f"emulated card ({what}, {card.memory_bytes} bytes of card memory) at "
              f"--device {directory / name} — Ctrl-C to stop", flush=True)
    nodes.init = announce
    # with `intr`, libfuse tells a worker thread about an interrupted request by SIGUSR1; its own
    # handler is only installed when the option is parsed at mount time, which mfusepy does later
    signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        FUSE(nodes, str(directory), foreground=True, nothreads=False, direct_io=True, intr=True,
             fsname="mmfree-card")
    except RuntimeError as e:
        if mounted:  # libfuse reports a stop by signal as an error status; the mount worked
            print("emulated card unmounted", file=sys.stderr)
            return
        raise UserError(f"{directory}: mounting the emulated card failed ({e}) — needs /dev/fuse and root "
                        "(or user_allow_other); see `fusermount3 -V`") from None
    finally:
        card.close()
    print("emulated card unmounted", file=sys.stderr)
