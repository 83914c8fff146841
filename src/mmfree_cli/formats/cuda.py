"""The cuda export: what `mmfree export --target cuda` writes and the cuda engine reads.

    manifest.json        format mmfree-cuda v1 (target cuda), layout i2, every file's sha256
    config.json          the model's reference config.json
    weights.safetensors  every BitLinear weight `<m>.weight` as `i2`-packed U8 [N, ceil(K/4)]
                         (quant.packing: four codes w+1 per byte along K, the order the Triton
                         GEMM reads), its scale `<m>.weight_beta` F32 [1] kept exactly as
                         training computed it, the embedding in bf16 and the small float tensors
                         (norm gains, lower bounds) in float32; checksummed
    tokenizer files      copied from the model directory

`tensors_of` turns a ternary model into these tensors, so the engine can also run a run or packed
directory without an export on disk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.tokenizer import copy_tokenizer_files
from ..fileio import load_safetensors, read_json, save_safetensors, write_json
from ..quant.packing import pack_i2
from ..quant.ternary import TernaryModel
from .manifest import peek, read_manifest, write_manifest

FORMAT = "mmfree-cuda"
FORMAT_VERSION = 1
TARGET = "cuda"
WEIGHTS = "weights.safetensors"
BETA_SUFFIX = "_beta"
REMAKE = "re-run `mmfree export --target cuda`"


def tensors_of(ternary: TernaryModel) -> dict[str, torch.Tensor]:
    """The tensors of weights.safetensors for a ternary model."""
    tensors: dict[str, torch.Tensor] = {}
    for name, codes in ternary.codes.items():
        tensors[name] = pack_i2(codes)
        tensors[name + BETA_SUFFIX] = ternary.betas[name].float().reshape(1)
    for name, value in ternary.floats.items():
        tensors[name] = value.to(torch.bfloat16 if name.endswith("embeddings.weight") else torch.float32)
    return tensors


def write_cuda_export(out_dir: Path, ternary: TernaryModel, model_dir: Path) -> None:
    save_safetensors(tensors_of(ternary), out_dir / WEIGHTS, {"mmfree.format": FORMAT, "mmfree.layout": "i2"})
    config = {k: v for k, v in read_json(model_dir / "config.json").items() if k != "quantization_config"}
    write_json(out_dir / "config.json", config)
    copy_tokenizer_files(model_dir, out_dir)
    write_manifest(out_dir, FORMAT, FORMAT_VERSION, target=TARGET, layout="i2", source=str(model_dir))


def read_cuda_export(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, tensors) of a cuda export, its version and every file's checksum checked."""
    read_manifest(path, FORMAT, FORMAT_VERSION, REMAKE)
    return read_json(path / "config.json"), load_safetensors(path / WEIGHTS)[0]


def is_cuda_export(path: Path) -> bool:
    found = peek(path)
    return found is not None and (found.get("format") == FORMAT or found.get("target") == TARGET)
