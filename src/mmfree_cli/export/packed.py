"""`mmfree quantize`: a run or reference checkpoint → a self-contained packed model directory.

β is computed once from the latent weights with the same `weight_scale`/`ternarize` the fake-quant
forward uses, and stored as is (never re-derived from the ternary codes: reference issue #18).
A packed directory is accepted as a source too, so a model can be re-packed in another layout.
The directory is built under a temporary name and renamed into place: nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

from ..data.tokenizer import copy_tokenizer_files
from ..errors import UserError
from ..fileio import atomic_dir, sha256_file, write_json
from ..formats.packed import CONFIG, WEIGHTS, check_dtypes, quantization_config, write_manifest, write_packed_weights
from ..formats.ternary import open_ternary
from ..paths import EXPORTS_DIR, model_name, point_latest, resolve_model
from ..quant.packing import LAYOUTS
from ..quant.ternary import TernaryModel
from .packed_report import size_report

PACKED_DIR = "packed"
"""Default outputs go to exports/packed/<model>-<layout>/, with exports/packed/latest."""


def default_out(source: Path, layout: str, root: str | Path = ".") -> Path:
    name = model_name(source)
    return Path(root) / EXPORTS_DIR / PACKED_DIR / f"{name.removesuffix('-' + layout)}-{layout}"


def quantize(model: str | Path | None = None, out: str | Path | None = None, layout: str = "i2",
             float_dtype: str = "bfloat16", root: str | Path = ".",
             embedding_dtype: str | None = None) -> tuple[Path, dict]:
    """Pack `model` (default: the newest run) into `out`; returns (out, size report).

    The embedding table is stored in `embedding_dtype` (default: `float_dtype`; also "int8",
    per-row scaled), every other float tensor in `float_dtype`.
    """
    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r} — choose one of {', '.join(LAYOUTS)}")
    embedding_dtype = check_dtypes(float_dtype, embedding_dtype)
    source = resolve_model(model, root)
    out = Path(out) if out is not None else default_out(source, layout, root)
    if out.resolve() == source:
        raise UserError(f"{out}: is the source model — choose another -o")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not empty — choose another -o or remove it")
    ternary = open_ternary(source)
    with atomic_dir(out) as tmp:
        report = _write_directory(ternary, source, tmp, layout, float_dtype, embedding_dtype)
    if out.parent.name == PACKED_DIR and out.parent.parent.name == EXPORTS_DIR:
        point_latest(out)
    return out, report


def _write_directory(ternary: TernaryModel, source: Path, directory: Path, layout: str,
                     float_dtype: str, embedding_dtype: str) -> dict:
    write_packed_weights(ternary, directory / WEIGHTS, layout, float_dtype, embedding_dtype)
    config = {k: v for k, v in ternary.config.items() if k != "quantization_config"}
    config["quantization_config"] = quantization_config(layout)
    write_json(directory / CONFIG, config)
    copy_tokenizer_files(source, directory)
    report = size_report(ternary, directory / WEIGHTS, layout, float_dtype, embedding_dtype)
    src_weights = source / WEIGHTS
    source_info = {"path": str(source), "weights_sha256": sha256_file(src_weights) if src_weights.is_file() else None,
                   "packed_layout": ternary.layout, "packed_embedding_dtype": ternary.embedding_dtype}
    write_manifest(directory, layout, float_dtype, source_info, report, embedding_dtype)
    return report
