"""Packed ternary model directories: the format `mmfree quantize` writes, its reader and writer.

A packed model directory is self-contained (format_version 1):

    manifest.json       {"format": "mmfree-packed", "format_version": 1, "layout", "float_dtype",
                         "embedding_dtype", "weights": "model.safetensors", "files": {name: sha256, ...}, "source": {...},
                         "report": {...}}   — every other file of the directory with its sha256
    config.json         the source's reference config.json plus `quantization_config`
                        (hf-bitnet: transformers' BitNetQuantConfig fields; else quant_method "mmfree")
    model.safetensors   the tensors below; `__metadata__` names format, version, layout, float dtype,
                        embedding dtype and the unpacked [out, in] shape of every ternary tensor;
                        checksummed
    tokenizer files     copied from the source as they were

Tensors, for every BitLinear `<m>` (`<m>.weight` is [N, K] in the float checkpoint):

    <m>.weight          U8, the ternary codes in the layout (see `packing`)
    <m>.weight_beta     F32 [1], the per-tensor scale β exactly as training computed it
    <m>.weight_scale    F32 [1], hf-bitnet only: 1/β, what transformers' BitLinear multiplies by
    everything else     norms, lower bounds in `float_dtype` (bf16 by default); the embedding
                        table in `embedding_dtype` (default: `float_dtype`)
    <e>_row_scale       F32 [V], embedding_dtype int8 only: `<e>` (the embedding) is then I8 [V, d]
                        codes with one scale a row (see `rowint8`)

Readers get every float tensor in float32 or its stored float dtype: int8 rows are dequantised on
reading (`TernaryModel.floats`), their codes and scales kept in `int8_rows` for lossless re-packing.

Dequantised weight: `W = (w.float() · β).to(dtype)`, as the fake-quant forward computes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import load_safetensors, read_json, save_safetensors
from ..kernels.numerics import BITLINEAR_NORM_EPS
from ..quant.packing import LAYOUTS, pack, packed_shape, unpack
from ..quant.rowint8 import check_rows, dequantize_rows, quantize_rows
from ..quant.ternary import TernaryModel
from .manifest import MANIFEST, peek
from .manifest import read_manifest as read_any_manifest
from .manifest import write_manifest as write_any_manifest

FORMAT = "mmfree-packed"
FORMAT_VERSION = 1
REMAKE = "re-run `mmfree quantize`"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
BETA_SUFFIX = ".weight_beta"
HF_SCALE_SUFFIX = ".weight_scale"
ROW_SCALE_SUFFIX = "_row_scale"
FLOAT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
EMBEDDING_DTYPES = (*FLOAT_DTYPES, "int8")
"""The embedding table may also be per-row-scaled int8 (`rowint8`): 8 bits, about half of bf16."""
META = {"format": "mmfree.format", "version": "mmfree.format_version", "layout": "mmfree.layout",
        "float_dtype": "mmfree.float_dtype", "embedding_dtype": "mmfree.embedding_dtype",
        "shapes": "mmfree.ternary_shapes"}


def is_embedding(name: str) -> bool:
    return name.endswith("embeddings.weight")


def check_dtypes(float_dtype: str, embedding_dtype: str | None) -> str:
    """The embedding dtype to use (default: `float_dtype`); refuses unknown names."""
    if float_dtype not in FLOAT_DTYPES:
        raise UserError(f"unknown float dtype {float_dtype!r} — choose one of {', '.join(FLOAT_DTYPES)}")
    embedding_dtype = embedding_dtype or float_dtype
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise UserError(f"unknown embedding dtype {embedding_dtype!r} — choose one of "
                        f"{', '.join(EMBEDDING_DTYPES)}")
    return embedding_dtype


def quantization_config(layout: str) -> dict:
    """The `quantization_config` block of a packed model's config.json."""
    if layout == "hf-bitnet":
        # transformers.BitNetQuantConfig fields; our BitLinears carry their own RMSNorm (`<m>.norm`)
        return {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline",
                "modules_to_not_convert": None, "use_rms_norm": True, "rms_norm_eps": BITLINEAR_NORM_EPS}
    return {"quant_method": "mmfree", "layout": layout, "format_version": FORMAT_VERSION}


def pack_tensors(model: TernaryModel, layout: str, float_dtype: str,
                 embedding_dtype: str | None = None) -> tuple[dict, dict]:
    """(tensors, metadata) of model.safetensors for `model` in `layout`."""
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r} — choose one of {', '.join(LAYOUTS)}")
    embedding_dtype = check_dtypes(float_dtype, embedding_dtype)
    tensors: dict[str, torch.Tensor] = {}
    for name, w in model.codes.items():
        beta = model.betas[name].reshape(1).to(torch.float32)
        tensors[name] = pack(w, layout)
        tensors[_stem(name) + BETA_SUFFIX] = beta
        if layout == "hf-bitnet":
            tensors[_stem(name) + HF_SCALE_SUFFIX] = 1.0 / beta
    for name, t in model.floats.items():
        dtype = embedding_dtype if is_embedding(name) else float_dtype
        if dtype == "int8":
            # already int8 (a packed source): the stored codes and scales, not a re-rounding
            codes, scale = model.int8_rows.get(name) or quantize_rows(t, name)
            tensors[name], tensors[name + ROW_SCALE_SUFFIX] = codes, scale
        else:
            tensors[name] = t.to(FLOAT_DTYPES[dtype])
    shapes = {name: list(w.shape) for name, w in model.codes.items()}
    meta = {"format": "pt", META["format"]: FORMAT, META["version"]: str(FORMAT_VERSION),
            META["layout"]: layout, META["float_dtype"]: float_dtype,
            META["embedding_dtype"]: embedding_dtype, META["shapes"]: json.dumps(shapes)}
    return tensors, meta


def write_packed_weights(model: TernaryModel, path: Path, layout: str, float_dtype: str,
                         embedding_dtype: str | None = None) -> None:
    tensors, meta = pack_tensors(model, layout, float_dtype, embedding_dtype)
    save_safetensors(tensors, path, meta)


def write_manifest(directory: Path, layout: str, float_dtype: str, source: dict, report: dict,
                   embedding_dtype: str | None = None) -> None:
    """manifest.json listing every other file of `directory` with its sha256; written last."""
    write_any_manifest(directory, FORMAT, FORMAT_VERSION, layout=layout, float_dtype=float_dtype,
                       embedding_dtype=embedding_dtype or float_dtype, weights=WEIGHTS, source=source,
                       report=report)


def is_packed(path: str | Path) -> bool:
    """True for a packed model directory or a packed .safetensors file (by its markers, not checked)."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            return False
        found = peek(path)
        return found is None or found.get("format") == FORMAT  # damaged: let the reader name the problem
    if path.is_file() and path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                return (f.metadata() or {}).get(META["format"]) == FORMAT
        except Exception:  # unreadable header: not recognisably ours
            return False
    return False


def read_manifest(directory: Path) -> dict:
    """The manifest of a packed directory, with every listed file's sha256 checked."""
    return read_any_manifest(directory, FORMAT, FORMAT_VERSION, REMAKE)


def read_packed_weights(path: Path) -> TernaryModel:
    """Unpack a packed model.safetensors (checksum checked) into codes, betas and floats."""
    tensors, meta = load_safetensors(path)
    if meta.get(META["format"]) != FORMAT:
        raise UserError(f"{path}: not a packed mmfree safetensors file (no {META['format']} marker)")
    if meta.get(META["version"]) != str(FORMAT_VERSION):
        raise UserError(f"{path}: packed format_version {meta.get(META['version'])!r} is not supported "
                        f"(this mmfree reads {FORMAT_VERSION}) — {REMAKE}")
    layout = meta.get(META["layout"])
    try:
        shapes = {k: tuple(v) for k, v in json.loads(meta[META["shapes"]]).items()}
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise UserError(f"{path}: packed metadata has no valid ternary shapes ({e})") from None
    codes, betas = {}, {}
    for name, shape in shapes.items():
        beta_key = _stem(name) + BETA_SUFFIX
        if name not in tensors or beta_key not in tensors:
            raise UserError(f"{path}: packed tensor {name} or its scale is missing — re-run `mmfree quantize`")
        try:
            codes[name] = unpack(tensors.pop(name), layout, shape)
        except ValueError as e:
            raise UserError(f"{path}: {name}: {e}") from None
        betas[name] = tensors.pop(beta_key).reshape(())
        tensors.pop(_stem(name) + HF_SCALE_SUFFIX, None)
    float_dtype = meta.get(META["float_dtype"], "bfloat16")
    embedding_dtype = meta.get(META["embedding_dtype"], float_dtype)  # absent in files before int8 rows
    if embedding_dtype not in EMBEDDING_DTYPES:
        raise UserError(f"{path}: embedding dtype {embedding_dtype!r} is not one this mmfree reads "
                        f"({', '.join(EMBEDDING_DTYPES)}) — re-run `mmfree quantize` or update mmfree")
    int8_rows = _pop_int8_rows(tensors, path)
    floats = {**tensors, **{k: dequantize_rows(c, s) for k, (c, s) in int8_rows.items()}}
    return TernaryModel(config={}, codes=codes, betas=betas, floats=floats, layout=layout,
                        float_dtype=float_dtype, embedding_dtype=embedding_dtype, int8_rows=int8_rows)


def _pop_int8_rows(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Take every int8-rows tensor (one with a `_row_scale` partner) out of `tensors`, checked."""
    out = {}
    for scale_key in [k for k in tensors if k.endswith(ROW_SCALE_SUFFIX)]:
        name = scale_key.removesuffix(ROW_SCALE_SUFFIX)
        if name not in tensors:
            raise UserError(f"{path}: {scale_key} has no {name} — re-run `mmfree quantize`")
        codes, scale = tensors.pop(name), tensors.pop(scale_key)
        check_rows(codes, scale, f"{path}: {name}")
        out[name] = (codes, scale)
    return out


def read_packed(path: str | Path) -> TernaryModel:
    """A packed model directory (manifest and checksums checked) or a bare packed .safetensors file."""
    path = Path(path)
    if path.is_file():
        return read_packed_weights(path)
    if not path.is_dir():
        raise UserError(f"{path}: packed model not found")
    manifest = read_manifest(path)
    model = read_packed_weights(path / manifest.get("weights", WEIGHTS))
    if model.layout != manifest.get("layout"):
        raise UserError(f"{path}: manifest layout {manifest.get('layout')!r} does not match "
                        f"{WEIGHTS} layout {model.layout!r}")
    model.config = read_json(path / CONFIG)
    model.manifest = manifest
    return model


def _stem(weight_name: str) -> str:
    """`model.layers.0.attn.i_proj.weight` → `model.layers.0.attn.i_proj`."""
    return weight_name.removesuffix(".weight")


def packed_bytes(shape: tuple[int, ...], layout: str) -> int:
    n = 1
    for s in packed_shape(shape, layout):
        n *= s
    return n
