"""`mmfree export --target cuda`: what the cuda engine (`engines/cuda.py`) loads.

    manifest.json        {"target": "cuda", "format": "mmfree-cuda", "format_version": 1,
                          "layout": "i2", "files": {name: sha256}, "source": ...}
    config.json          the model's reference config.json
    weights.safetensors  every BitLinear weight `<m>.weight` as `i2`-packed U8 [N, ceil(K/4)]
                         (quant.packing: four codes w+1 per byte along K, the order the Triton
                         GEMM reads), its scale `<m>.weight_beta` F32 [1] kept exactly as
                         training computed it, the embedding in bf16 and the small float tensors
                         (norm gains, lower bounds) in float32; checksummed
    tokenizer files      copied from the model directory

The source may be a run directory (latent weights, ternarised here) or a `mmfree quantize` output.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.tokenizer import copy_tokenizer_files
from ..errors import UserError
from ..fileio import check_listed_files, read_json, save_safetensors, sha256_file, write_json

FORMAT = "mmfree-cuda"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
BETA_SUFFIX = "_beta"


def export_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of weights.safetensors for the model at `model_dir`."""
    from ..quant.packing import pack_i2
    from ..quant.quantize import load_ternary
    ternary = load_ternary(model_dir)
    tensors: dict[str, torch.Tensor] = {}
    for name, codes in ternary.codes.items():
        tensors[name] = pack_i2(codes)
        tensors[name + BETA_SUFFIX] = ternary.betas[name].float().reshape(1)
    for name, value in ternary.floats.items():
        tensors[name] = value.to(torch.bfloat16 if name.endswith("embeddings.weight") else torch.float32)
    return tensors


def export(model_dir: Path, out_dir: Path, **options) -> None:
    """Fill `out_dir` with the cuda engine's files (see the module doc)."""
    if options:
        raise UserError(f"export --target cuda takes no options {', '.join(sorted(options))}")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json — give a run or model directory (e.g. runs/latest)")
    save_safetensors(export_tensors(model_dir), out_dir / WEIGHTS,
                     {"mmfree.format": FORMAT, "mmfree.layout": "i2"})
    config = {k: v for k, v in read_json(model_dir / "config.json").items() if k != "quantization_config"}
    write_json(out_dir / "config.json", config)
    copy_tokenizer_files(model_dir, out_dir)
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    write_json(out_dir / "manifest.json", {"target": "cuda", "format": FORMAT, "format_version": FORMAT_VERSION,
                                           "layout": "i2", "files": files, "source": str(model_dir)})


def read_export(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, tensors) of a cuda export, every file's checksum checked."""
    from ..fileio import load_safetensors
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not a cuda export of format {FORMAT} v{FORMAT_VERSION} — "
                        "re-run `mmfree export --target cuda`")
    check_listed_files(path, manifest.get("files", {}), "re-run `mmfree export --target cuda`")
    return read_json(path / "config.json"), load_safetensors(path / WEIGHTS)[0]


def is_cuda_export(path: Path) -> bool:
    manifest = Path(path) / "manifest.json"
    return manifest.is_file() and read_json(manifest).get("format") == FORMAT
