"""`mmfree export --target cpu`: the integer model of docs/integer-spec.md, ready for `--engine cpu`.

The export directory holds
    model.safetensors   the integer model (`quant.intspec` names), each projection's ternary codes
                        packed 2 bits a weight in the i2 layout (`<proj>.packed`, uint8 [N, ceil(K/4)],
                        K = len(<proj>.gain)), plus the spec's tables (sigmoid_table, rsqrt_table)
    config.json         the model config (engines read the shape from it)
    tokenizer files     copied from the model directory
    manifest.json       target, spec version, table digest, the source model and every file's sha256

`read_int_model` reads such a directory back, or converts a run / packed model directory on the fly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import check_listed_files, load_safetensors, read_json, save_safetensors, sha256_file, write_json
from ..data.tokenizer import copy_tokenizer_files
from ..quant import intspec
from ..quant.packing import pack_i2, unpack_i2

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
TARGET = "cpu"


def int_model_of(model_dir: Path) -> dict[str, np.ndarray]:
    """The integer model of a run, reference checkpoint or packed (`mmfree quantize`) directory."""
    from ..quant.load import load_model
    model = load_model(model_dir, dtype=torch.float32)
    if not model.config.ternary:
        raise UserError(f"{model_dir}: the model is not ternary (ternary: false) — the integer "
                        "engine needs a ternary model")
    return intspec.int_model_from_float(model)


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
            raise UserError(f"{source}: its {table} differs from this version's integer spec — "
                            "re-export the model with `mmfree export --target cpu`")
    model = {}
    for name, t in tensors.items():
        if name.endswith(".packed"):
            stem = name[: -len("packed")]
            k = tensors[stem + "gain"].shape[0]
            try:
                model[stem + "codes"] = unpack_i2(t.numpy(), k)
            except ValueError as e:
                raise UserError(f"{source}: {name}: {e} — re-export the model") from None
        elif not name.endswith("_table"):
            model[name] = t.numpy()
    return model


def export(model_dir: Path, out_dir: Path, **options) -> None:
    """Fill `out_dir` with the integer model of `model_dir` (see the module docstring)."""
    unknown = sorted(k for k, v in options.items() if v is not None)
    if unknown:
        raise UserError(f"export --target cpu takes no {', '.join('--' + k for k in unknown)} option")
    model = int_model_of(Path(model_dir))
    save_safetensors(to_file_tensors(model), out_dir / WEIGHTS,
                     {"format": "mmfree-int", "spec_version": str(intspec.SPEC_VERSION)})
    shutil.copy2(Path(model_dir) / "config.json", out_dir / "config.json")
    copy_tokenizer_files(model_dir, out_dir)
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    write_json(out_dir / MANIFEST, {
        "target": TARGET, "schema_version": 1, "integer_spec_version": intspec.SPEC_VERSION,
        "integer_spec": "docs/integer-spec.md", "table_sha256": intspec.table_digest(),
        "weight_layout": "i2", "source": str(Path(model_dir).resolve()), "files": files,
    })


def is_cpu_export(path: Path) -> bool:
    manifest = path / MANIFEST
    return manifest.is_file() and read_json(manifest).get("target") == TARGET


def read_int_model(path: str | Path) -> dict[str, np.ndarray]:
    """An integer model from a cpu export (checksums checked) or any model directory (converted)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: not a directory — give a run, model or `export --target cpu` directory")
    if not is_cpu_export(path):
        return int_model_of(path)
    manifest = read_json(path / MANIFEST)
    check_listed_files(path, manifest.get("files", {}), "re-export the model (`mmfree export --target cpu`)")
    if manifest.get("integer_spec_version") != intspec.SPEC_VERSION:
        raise UserError(f"{path}: integer spec version {manifest.get('integer_spec_version')}, this mmfree "
                        f"reads version {intspec.SPEC_VERSION} — re-export the model")
    tensors, _ = load_safetensors(path / WEIGHTS)
    return from_file_tensors(tensors, path / WEIGHTS)
