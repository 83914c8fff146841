"""Inference engines behind one interface (`base.Engine`), looked up by name.

Each engine class has `load(path: Path, **options) -> Engine`; `path` is a run directory or an
export directory of the engine's target. Engines import lazily, so a missing optional dependency
only affects its own engine.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import UserError
from .base import Engine

ENGINES: dict[str, str] = {
    "torch": "mmfree_cli.engines.torch_engine:TorchEngine",
    "cuda": "mmfree_cli.engines.cuda:CudaEngine",
    "onnx": "mmfree_cli.engines.onnx_engine:OnnxEngine",
    "cpu": "mmfree_cli.engines.cpu_int:CpuIntEngine",
    "fpga": "mmfree_cli.engines.fpga:FpgaEngine",
}
"""name → "module:Class". Other issues add cuda, cpu, onnx and fpga here."""


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r} — choose one of auto, {', '.join(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def auto_engine_name(path: Path) -> str:
    """The best engine for a model directory: its export target if it is an export, else torch
    (cuda when a GPU and the cuda engine are there)."""
    from ..formats.manifest import peek
    target = (peek(path) or {}).get("target")  # checked by the engine's reader, not here
    if target in ENGINES:
        return target
    import torch
    if torch.cuda.is_available() and "cuda" in ENGINES:
        return "cuda"
    return "torch"


def load_engine(name: str, path: str | Path, **options) -> Engine:
    """Load the model at `path` into engine `name` ("auto" picks one)."""
    path = Path(path)
    if name == "auto":
        name = auto_engine_name(path)
    return engine_class(name).load(path, **options)


__all__ = ["Engine", "ENGINES", "engine_class", "load_engine", "auto_engine_name"]
