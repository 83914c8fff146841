"""The onnx export's directory (written by `export.onnx`, read by the onnx engine):

    prefill.onnx decode.onnx weights.bin   the two graphs and their shared external weights
    onnx_config.json                       inputs, outputs, opset, weight format, tokenizer, template
    config.json, tokenizer files           the model config (reference format) and its tokenizer
    manifest.json                          format mmfree-onnx v2 (target onnx), weight format,
                                           precision, opset, versions, every file's sha256

Version 1 (a manifest with `target` but no `format`) is refused with the command that writes v2.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import read_json
from .manifest import check_version, peek, verify, write_manifest

FORMAT = "mmfree-onnx"
FORMAT_VERSION = 2
TARGET = "onnx"
REMAKE = "re-run `mmfree export --target onnx`"


def write_onnx_manifest(out_dir: Path, **fields) -> dict:
    """The manifest, written last (every graph, weight, config and tokenizer file is there)."""
    return write_manifest(out_dir, FORMAT, FORMAT_VERSION, target=TARGET, **fields)


def read_onnx_manifest(path: Path, check_files: bool = True) -> dict:
    """The manifest of an onnx export, its version checked (and every file's sha256 unless told not)."""
    found = peek(path)
    if found is None or (found.get("format") != FORMAT and found.get("target") != TARGET):
        raise UserError(f"{path}: not an onnx export — run `mmfree export {path} --target onnx` "
                        "and use the directory it prints")
    manifest = read_json(Path(path) / "manifest.json")
    check_version(manifest, Path(path) / "manifest.json", FORMAT, FORMAT_VERSION, REMAKE)
    if check_files:
        verify(path, manifest, REMAKE)
    return manifest
