"""`mmfree info` and `mmfree env`: what a model is, and what this machine can run."""

from __future__ import annotations

import platform
from pathlib import Path

from rich.table import Table

from .errors import UserError


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.1f} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n} {unit}"


def describe(path: str) -> Table:
    """A table describing a preset, a model/run directory or a packed file."""
    from .model import HGRNBitConfig, HGRNBitForCausalLM, from_pretrained, presets
    from .model.checkpoint import model_source
    p = Path(path) if path in presets() else model_source(path)
    loads = "n/a (preset)"
    from .formats.packed import is_packed
    if is_packed(p):
        from .export.packed_report import describe_packed
        return describe_packed(p)
    if path in presets() and not p.exists():
        from .model import preset
        config = preset(path)
        import torch
        with torch.device("meta"):
            model = HGRNBitForCausalLM(config, init=False)
    elif p.is_dir():
        config = HGRNBitConfig.load(p)
        model = from_pretrained(p)
        loads = "yes"
    elif p.is_file():
        return _describe_file(p)
    else:
        raise UserError(f"{path}: not a model directory, packed file or preset ({', '.join(presets())})")
    counts = model.num_parameters()
    t = Table(title=f"mmfree info {path}", show_header=False)
    for k, v in config.to_dict().items():
        if k != "architectures":
            t.add_row(k, str(v))
    t.add_row("parameters (total)", f"{counts['total']:,} ({counts['total'] / 1e6:.1f}M)")
    t.add_row("  ternary (BitLinear weights)", f"{counts['ternary']:,}")
    t.add_row("  float (embeddings, norms, bounds)", f"{counts['float']:,}")
    t.add_row("bytes as bf16", _human(2 * counts["total"]))
    t.add_row("bytes packed (2-bit ternary + bf16 rest)", _human(counts["ternary"] / 4 + 2 * counts["float"]))
    t.add_row("loads", loads)
    return t


def _describe_file(p: Path) -> Table:
    from .fileio import load_safetensors
    if p.suffix != ".safetensors":
        raise UserError(f"{p}: not a .safetensors file or model directory")
    tensors, meta = load_safetensors(p)
    t = Table(title=f"mmfree info {p}", show_header=False)
    for k, v in meta.items():
        t.add_row(k, v if len(v) < 80 else v[:77] + "...")
    t.add_row("tensors", str(len(tensors)))
    t.add_row("bytes", _human(sum(x.numel() * x.element_size() for x in tensors.values())))
    return t


def environment() -> Table:
    import torch

    from . import __version__
    t = Table(title="mmfree env", show_header=False)
    t.add_row("mmfree", __version__)
    t.add_row("python", platform.python_version())
    t.add_row("platform", platform.platform())
    t.add_row("torch", torch.__version__)
    t.add_row("cpu threads", str(torch.get_num_threads()))
    cuda = torch.cuda.is_available()
    t.add_row("cuda", ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "not available")
    for name in ("triton", "accelerate", "datasets", "safetensors", "tokenizers", "onnx", "onnxruntime", "numba"):
        try:
            mod = __import__(name)
            t.add_row(name, getattr(mod, "__version__", "?"))
        except Exception as e:  # an optional package may fail to import for many reasons
            t.add_row(name, f"unavailable ({type(e).__name__})")
    t.add_row("triton kernels", "yes (CUDA GPU)" if cuda else "interpreter only (TRITON_INTERPRET=1), no GPU")
    return t
