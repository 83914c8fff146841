"""The one manifest of every directory format mmfree writes: `manifest.json`.

    {"format": "mmfree-<artifact>", "format_version": N, "target": ..., ...format fields...,
     "files": {relative path: sha256, ...}}

Written last, after every other file, so its presence means the directory is complete. Readers
name the format and every version they read; anything else (a future version, another format, a
directory written before manifests carried `format`) is refused with one line that says what to
run, and every listed file's sha256 is checked before anything is read.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..fileio import read_json, sha256_file, write_json

MANIFEST = "manifest.json"


def file_digests(directory: Path) -> dict[str, str]:
    """{path relative to `directory`: sha256} of every file below it but the manifest and hidden ones."""
    directory = Path(directory)
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and rel.as_posix() != MANIFEST and not any(s.startswith(".") for s in rel.parts):
            out[rel.as_posix()] = sha256_file(p)
    return out


def write_manifest(directory: Path, fmt: str, version: int, **fields) -> dict:
    """Write `directory`/manifest.json listing every other file with its sha256; returns it."""
    manifest = {"format": fmt, "format_version": version, **fields, "files": file_digests(directory)}
    write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def peek(directory: Path) -> dict | None:
    """The manifest of `directory` as written, unchecked (None when there is none or it is not JSON):
    enough to tell which format a directory claims to be."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return found if isinstance(found, dict) else None


def read_manifest(directory: Path, fmt: str, version: int, remake: str) -> dict:
    """The manifest of a `fmt` directory of `version`, every listed file's sha256 checked.

    `remake` is the command that writes such a directory again (it ends every refusal)."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise UserError(f"{directory}: no {MANIFEST} — not a complete {fmt} directory; {remake}")
    manifest = read_json(directory / MANIFEST)
    check_version(manifest, directory / MANIFEST, fmt, version, remake)
    verify(directory, manifest, remake)
    return manifest


def check_version(manifest: dict, where: Path | str, fmt: str, version: int, remake: str) -> None:
    """Refuse another format or a version this mmfree does not read, in one line."""
    found = manifest.get("format")
    if found is None:
        raise UserError(f"{where}: written by an older mmfree (no `format` field) — {remake}")
    if found != fmt:
        raise UserError(f"{where}: a {found!r} directory, not {fmt!r} — {remake}")
    got = manifest.get("format_version")
    if got == version:
        return
    if isinstance(got, int) and got > version:
        raise UserError(f"{where}: {fmt} format_version {got} is newer than this mmfree reads ({version}) — "
                        f"upgrade mmfree, or {remake}")
    raise UserError(f"{where}: {fmt} format_version {got!r} is not one this mmfree reads ({version}) — {remake}")


def verify(directory: Path, manifest: dict, remake: str) -> None:
    """Every file the manifest lists is there with its recorded sha256."""
    for name, want in (manifest.get("files") or {}).items():
        path = Path(directory) / name
        if not path.is_file():
            raise UserError(f"{path}: missing (listed in {MANIFEST}) — {remake}")
        if sha256_file(path) != want:
            raise UserError(f"{path}: checksum mismatch (sha256 differs from {MANIFEST}), the file is corrupt or changed — "
                            f"{remake}")
