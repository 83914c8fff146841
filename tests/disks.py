"""Hostile file systems for tests: a read-only directory and a nearly full one.

As root (CI containers, this project's dev box) both are real tmpfs mounts (`ro`, and `size=`), so
the errors are the kernel's own EROFS and ENOSPC. Without root, a read-only directory is mode 0555
(EACCES) and a full disk is the file-size limit RLIMIT_FSIZE of the child process (EFBIG, the same
write path failing the same way); each test states what it gets.
"""

from __future__ import annotations

import os
import resource
import subprocess
from contextlib import contextmanager
from pathlib import Path


def _mount(target: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return r.returncode == 0


@contextmanager
def read_only_dir(parent: Path):
    """A directory nothing can be written into."""
    path = parent / "read-only"
    path.mkdir()
    mounted = _mount(path, "ro,size=64k")
    if not mounted:
        path.chmod(0o555)
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)
        else:
            path.chmod(0o755)


@contextmanager
def full_disk(parent: Path, kib: int):
    """(directory, preexec_fn): writes under the directory fail once about `kib` KiB are written
    (kib=0: a disk already full).

    Pass preexec_fn to subprocess (None when a real tmpfs of that size is mounted)."""
    path = parent / "small-disk"
    path.mkdir()
    if _mount(path, f"size={max(kib, 4)}k"):
        if kib == 0:
            _fill(path / ".filler")
        try:
            yield path, None
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))
    yield path, limit


def _fill(path: Path) -> None:
    try:
        with open(path, "wb") as f:
            while True:
                f.write(b"\0" * 512)
                f.flush()
    except OSError:
        pass


def leftovers(path: Path) -> list[str]:
    """Temporary or partial files a failed write left behind (they would fill the disk or be picked up)."""
    return sorted(str(p) for p in path.rglob("*") if p.name.endswith((".tmp", ".partial")) or ".tmp" in p.name)
