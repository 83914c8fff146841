"""Load and save models in the reference checkpoint layout (config.json + model.safetensors).

Reads what the released MMfreeLM checkpoints ship: a single `model.safetensors` or a sharded one
with `model.safetensors.index.json`, in bf16 or fp32, keys as in docs/design.md §2. Missing or
unexpected keys and shape mismatches are reported together in one error. Wherever a directory is
taken, a Hugging Face Hub id (`ridger/MMfreeLM-370M`, `org/name@revision`) works too: it is
fetched into the Hub cache (`model_source`, through `mmfree_cli.hub`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import load_safetensors, save_safetensors
from .config import HGRNBitConfig
from .model import HGRNBitForCausalLM

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


def model_source(spec: str | Path, resolve=Path) -> Path:
    """The directory `spec` names: a local path (through `resolve`, e.g. a recipe's
    `resolve_path`) when it exists, else a Hub id's cached snapshot, else the path as given."""
    from .. import hub
    local = resolve(str(spec))
    if Path(local).exists() or not hub.looks_like_hub_id(str(spec)):
        return Path(local)
    return hub.fetch_model(str(spec))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (single file or sharded), checksums checked."""
    path = Path(path)
    if (path / WEIGHTS_NAME).is_file():
        return load_safetensors(path / WEIGHTS_NAME)[0]
    if (path / INDEX_NAME).is_file():
        try:
            index = json.loads((path / INDEX_NAME).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise UserError(f"{path / INDEX_NAME}: not a valid safetensors index ({e})") from None
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_safetensors(path / shard)[0])
        return tensors
    raise UserError(f"{path}: no {WEIGHTS_NAME} or {INDEX_NAME} — is this a model directory?")


def load_state_dict_strict(model: HGRNBitForCausalLM, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `model`, refusing missing/unexpected keys or shape mismatches, all named."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(tensors)) if tensors[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_short(shapes)}")
    if problems:
        raise UserError(f"{source}: checkpoint does not fit its config.json — " + "; ".join(problems))
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(tensors[k].to(p.dtype))


def _short(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def from_pretrained(path: str | Path, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu") -> HGRNBitForCausalLM:
    """Load a model directory in the reference layout, or a Hub id such as "ridger/MMfreeLM-370M"
    (fetched into the Hub cache). dtype defaults to float32."""
    path = model_source(path)
    if not path.is_dir():
        raise UserError(f"{path}: model directory not found")
    config = HGRNBitConfig.load(path)
    model = _empty_model(config, dtype or torch.float32)
    load_state_dict_strict(model, read_state_dict(path), str(path))
    return model.to(device).eval()


def _empty_model(config: HGRNBitConfig, dtype: torch.dtype) -> HGRNBitForCausalLM:
    """Build without the (slow, soon overwritten) random init of large models."""
    return HGRNBitForCausalLM(config, init=False).to(dtype)


def save_pretrained(model: HGRNBitForCausalLM, path: str | Path, dtype: torch.dtype | None = None,
                    metadata: dict[str, str] | None = None) -> None:
    """Write config.json and model.safetensors (reference keys, checksummed) atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype else v) for k, v in model.state_dict().items()}
    save_safetensors(tensors, path / WEIGHTS_NAME, {"format": "pt", **(metadata or {})})
    model.config.save(path / "config.json")
