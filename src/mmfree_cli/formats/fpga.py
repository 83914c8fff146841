"""The FPGA bundle format (docs/design.md §5): its manifest header, and the host's
reader: the manifest (format mmfree-fpga-bundle, version and every file's sha256 checked), the
weight image checked against its recorded sha256, the int32 embedding table and the golden vectors.

`export/fpga/bundle.py` writes the bundle's files and manifest body; `write_bundle_manifest` adds
the format header and the file list, last. Version 1 (`schema_version: 1`, no `format`) is
refused with the command that writes version 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import load_safetensors, read_json
from .manifest import check_version, verify, write_manifest

FORMAT = "mmfree-fpga-bundle"
FORMAT_VERSION = 2
TARGET = "fpga"
REMAKE = "re-export it with `mmfree export --target fpga`"


def write_bundle_manifest(out_dir: Path, body: dict) -> dict:
    """manifest.json of a bundle: format, version, `body` (export.fpga.bundle.manifest) and every
    file's sha256; written last."""
    return write_manifest(out_dir, FORMAT, FORMAT_VERSION, target=TARGET, **body)


@dataclass
class Bundle:
    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise UserError(f"{path}: no manifest.json — give an fpga bundle (`mmfree export --target fpga`)")
        manifest = read_json(path / "manifest.json")
        if manifest.get("target") != "fpga":
            raise UserError(f"{path}: a {manifest.get('target')!r} export, not an fpga bundle — "
                            "run `mmfree export --target fpga`")
        check_version(manifest, path / "manifest.json", FORMAT, FORMAT_VERSION, REMAKE)
        verify(path, manifest, REMAKE)
        return cls(path, manifest)

    def artifact_sha(self, rel: str) -> str | None:
        for a in self.manifest.get("artifacts", []):
            if a.get("path") == rel:
                return a.get("sha256")
        return None

    def weights(self) -> bytes:
        """weights.bin, checked against the manifest (size and sha256)."""
        file = self.path / self.manifest["weights"]["file"]
        if not file.is_file():
            raise UserError(f"{file}: missing — the bundle is incomplete; re-export it")
        image = file.read_bytes()
        want = self.artifact_sha(self.manifest["weights"]["file"])
        if len(image) != self.manifest["weights"]["bytes"] or (want and hashlib.sha256(image).hexdigest() != want):
            raise UserError(f"{file}: does not match its manifest (size or sha256) — the bundle is corrupt; re-export it")
        return image

    def embed(self) -> np.ndarray:
        """The int32 [vocab, d] embedding table (Q15.16): row t goes to IN for token t."""
        tensors, _ = load_safetensors(self.path / "embed.safetensors")
        return tensors["embed"].numpy().astype(np.int32)

    def golden(self) -> dict[str, np.ndarray]:
        tensors, _ = load_safetensors(self.path / self.manifest["golden"]["path"])
        return {k: v.numpy() for k, v in tensors.items()}

    @property
    def design_id(self) -> str:
        return self.manifest["design_id"]

    def bitstreams(self) -> list[dict]:
        return [a for a in self.manifest.get("artifacts", []) if a.get("kind") == "bitstream"]
