"""The integer model on disk: what `mmfree export --target cpu` writes and `--engine cpu` reads.

    model.safetensors   the integer model (`quant.intspec` names), each projection's ternary codes
                        packed 2 bits a weight in the i2 layout (`<proj>.packed`, uint8 [N, ceil(K/4)],
                        K = len(<proj>.gain)), plus the spec's tables (sigmoid_table, rsqrt_table)
    config.json         the model config (engines read the shape from it)
    tokenizer files     copied from the model directory
    manifest.json       format mmfree-int v2 (target cpu), spec version, table digest, the source
                        model and every file's sha256 (`formats.manifest`)

Version 1 (before the shared manifest: `schema_version` and no `format`) is refused with the
command that writes version 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..data.tokenizer import copy_tokenizer_files
from ..errors import UserError
from ..fileio import load_safetensors, save_safetensors
from ..quant import intspec
from ..quant.packing import pack_i2, unpack_i2
from .manifest import peek, read_manifest, write_manifest

FORMAT = "mmfree-int"
FORMAT_VERSION = 2
TARGET = "cpu"
WEIGHTS = "model.safetensors"
REMAKE = "re-export the model with `mmfree export --target cpu`"


def to_file_tensors(model: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in model.items():
        if name.endswith(".codes"):
            out[name[: -len("codes")] + "packed"] = torch.from_numpy(pack_i2(value))
        else:
            out[name] = torch.from_numpy(np.ascontiguousarray(value))
    out["sigmoid_table"] = torch.from_numpy(intspec.SIGMOID_TABLE)
    out["rsqrt_table"] = torch.from_numpy(intspec.RSQRT_TABLE)
    return out


def from_file_tensors(tensors: dict[str, torch.Tensor], source: Path) -> dict[str, np.ndarray]:
    for table, want in (("sigmoid_table", intspec.SIGMOID_TABLE), ("rsqrt_table", intspec.RSQRT_TABLE)):
        if table not in tensors or not np.array_equal(tensors[table].numpy(), want):
            raise UserError(f"{source}: its {table} differs from this version's integer spec — {REMAKE}")
    model = {}
    for name, t in tensors.items():
        if name.endswith(".packed"):
            stem = name[: -len("packed")]
            k = tensors[stem + "gain"].shape[0]
            try:
                model[stem + "codes"] = unpack_i2(t.numpy(), k)
            except ValueError as e:
                raise UserError(f"{source}: {name}: {e} — {REMAKE}") from None
        elif not name.endswith("_table"):
            model[name] = t.numpy()
    return model


def write_int_model(out_dir: Path, model: dict[str, np.ndarray], model_dir: Path) -> None:
    """Fill `out_dir` with `model` (an integer model), the config and tokenizer of `model_dir`."""
    save_safetensors(to_file_tensors(model), out_dir / WEIGHTS,
                     {"format": FORMAT, "spec_version": str(intspec.SPEC_VERSION)})
    shutil.copy2(Path(model_dir) / "config.json", out_dir / "config.json")
    copy_tokenizer_files(model_dir, out_dir)
    write_manifest(out_dir, FORMAT, FORMAT_VERSION, target=TARGET,
                   integer_spec_version=intspec.SPEC_VERSION, integer_spec="docs/integer-spec.md",
                   table_sha256=intspec.table_digest(), weight_layout="i2",
                   source=str(Path(model_dir).resolve()))


def is_int_model_dir(path: Path) -> bool:
    """A cpu export by what its manifest claims (this version's or an older one), unchecked."""
    found = peek(path)
    return found is not None and (found.get("format") == FORMAT or found.get("target") == TARGET)


def read_int_model(path: Path) -> dict[str, np.ndarray]:
    """The integer model of a cpu export (manifest version and every file's sha256 checked), or of
    any run, checkpoint or packed directory (built from its ternary model)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a directory — give a run, model or `export --target cpu` directory")
    if not is_int_model_dir(path):
        from ..quant.intmodel import int_model
        from .ternary import open_ternary
        return int_model(open_ternary(path))
    manifest = read_manifest(path, FORMAT, FORMAT_VERSION, REMAKE)
    if manifest.get("integer_spec_version") != intspec.SPEC_VERSION:
        raise UserError(f"{path}: integer spec version {manifest.get('integer_spec_version')}, this mmfree "
                        f"reads version {intspec.SPEC_VERSION} — {REMAKE}")
    tensors, _ = load_safetensors(path / WEIGHTS)
    return from_file_tensors(tensors, path / WEIGHTS)
