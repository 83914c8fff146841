"""`mmfree quantize`: a run or reference checkpoint → a self-contained packed model directory.

β is computed once from the latent weights with the same `weight_scale`/`ternarize` the fake-quant
forward uses, and stored as is (never re-derived from the ternary codes: reference issue #18).
A packed directory is accepted as a source too, so a model can be re-packed in another layout.
The directory is built under a temporary name and renamed into place: nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.tokenizer import copy_tokenizer_files
from ..errors import UserError
from ..fileio import atomic_dir, read_json, sha256_file, write_json
from ..kernels.bitlinear import ternarize, weight_scale
from ..paths import EXPORTS_DIR, model_name, point_latest, resolve_model
from .packed import (CONFIG, WEIGHTS, TernaryModel, check_dtypes, is_packed, quantization_config, read_packed,
                     write_manifest, write_packed_weights)
from .packing import LAYOUTS
from .report import size_report

PACKED_DIR = "packed"
"""Default outputs go to exports/packed/<model>-<layout>/, with exports/packed/latest."""


def ternary_from_model(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{weight key: (int8 codes [N, K], float32 β)} for every BitLinear of an HGRNBitForCausalLM."""
    from ..model.layers import BitLinear
    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, BitLinear):
                w = module.weight.detach()
                beta = weight_scale(w)
                out[f"{name}.weight"] = (ternarize(w, beta).to(torch.int8), beta.to(torch.float32))
    return out


def load_ternary(source: Path) -> TernaryModel:
    """Codes, β and float tensors of a run / reference checkpoint (latent weights) or packed directory."""
    if is_packed(source):
        return read_packed(source)
    from ..model import from_pretrained
    model = from_pretrained(source)  # float32: the precision β and the codes are defined in
    if not model.config.ternary:
        raise UserError(f"{source}: config.json has ternary: false (a full-precision model) — "
                        "quantize a ternary run or reference checkpoint")
    ternary = ternary_from_model(model)
    floats = {k: v for k, v in model.state_dict().items() if k not in ternary}
    return TernaryModel(config=read_json(source / CONFIG),
                        codes={k: c for k, (c, _) in ternary.items()},
                        betas={k: b for k, (_, b) in ternary.items()}, floats=floats)


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
    ternary = load_ternary(source)
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
