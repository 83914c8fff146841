"""Size report of a packed model: bytes per tensor group, total against bf16, bits per weight.

"theoretical" is the size the layout promises with no overhead: ternary weights at exactly the
layout's bits per weight (2 for i2 / hf-bitnet, 8/5 for tq1), the float tensors at their dtype's
width, the scales at 4 bytes (an int8 embedding: 1 byte a value plus its 4-byte row scales). The
file's excess over it is padding, safetensors header and metadata.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..formats.packed import FLOAT_DTYPES, is_embedding, packed_bytes
from ..quant.ternary import TernaryModel

LAYOUT_BITS = {"i2": 2.0, "tq1": 8 / 5, "hf-bitnet": 2.0}
"""Bits per ternary weight each layout stores, padding aside."""
BF16_BYTES = 2


def tensor_group(name: str) -> str:
    if name.endswith("lower_bounds"):
        return "lower bounds"
    if "embeddings" in name:
        return "embeddings"
    if name.endswith("norm.weight"):
        return "norms"
    return "other float"


def stored_bytes(t, dtype: str) -> int:
    """Bytes of float tensor `t` stored as `dtype`; int8 rows carry a float32 scale per row."""
    if dtype == "int8":
        return t.numel() + 4 * t.shape[0]
    return t.numel() * FLOAT_DTYPES[dtype].itemsize


def size_report(model: TernaryModel, weights_file: Path, layout: str, float_dtype: str,
                embedding_dtype: str | None = None) -> dict:
    """Bytes per group, totals and bits per weight of `weights_file` (written from `model`)."""
    embedding_dtype = embedding_dtype or float_dtype
    scales_per_tensor = 2 if layout == "hf-bitnet" else 1
    groups: dict[str, dict] = {}

    def add(group: str, params: int, nbytes: int) -> None:
        g = groups.setdefault(group, {"params": 0, "bytes": 0})
        g["params"] += params
        g["bytes"] += nbytes

    for w in model.codes.values():
        add("ternary weights", w.numel(), packed_bytes(tuple(w.shape), layout))
        add("scales", scales_per_tensor, 4 * scales_per_tensor)
    for name, t in model.floats.items():
        add(tensor_group(name), t.numel(), stored_bytes(t, embedding_dtype if is_embedding(name) else float_dtype))
    float_bytes = sum(g["bytes"] for name, g in groups.items() if name not in ("ternary weights", "scales"))
    file_bytes = weights_file.stat().st_size
    add("header + metadata", 0, file_bytes - sum(g["bytes"] for g in groups.values()))
    ternary_params = groups["ternary weights"]["params"]
    params = sum(g["params"] for g in groups.values()) - groups["scales"]["params"]
    theoretical = ternary_params * LAYOUT_BITS[layout] / 8 + groups["scales"]["bytes"] + float_bytes
    return {"layout": layout, "float_dtype": float_dtype, "embedding_dtype": embedding_dtype, "groups": groups,
            "file_bytes": file_bytes, "bf16_bytes": params * BF16_BYTES,
            "theoretical_bytes": round(theoretical), "params": params, "ternary_params": ternary_params,
            "vs_theoretical": file_bytes / theoretical, "smaller_than_bf16": params * BF16_BYTES / file_bytes,
            "bits_per_ternary_weight": 8 * groups["ternary weights"]["bytes"] / max(ternary_params, 1),
            "bits_per_weight_overall": 8 * file_bytes / max(params, 1)}


def human_bytes(n: float) -> str:
    for prefix in ("", "K", "M", "G"):
        if abs(n) < 1000 or prefix == "G":
            return f"{n:.0f} B" if not prefix else f"{n:.2f} {prefix}B"
        n /= 1000
    return f"{n} B"


def summary(report: dict) -> str:
    """The totals of a report in one line."""
    embedding = report.get("embedding_dtype", report["float_dtype"])
    embedding = "int8 (per-row scale)" if embedding == "int8" else embedding
    return (f"layout {report['layout']}, floats {report['float_dtype']}, embeddings {embedding} · "
            f"{report['smaller_than_bf16']:.2f}× smaller than bf16 · "
            f"{report['vs_theoretical']:.3f}× theoretical ({human_bytes(report['theoretical_bytes'])}) · "
            f"{report['bits_per_ternary_weight']:.3f} bits per ternary weight, "
            f"{report['bits_per_weight_overall']:.3f} overall")


def render(report: dict, title: str = "packed size") -> Group:
    """The report as a rich table (one row per group, then the totals) and its summary line."""
    return Group(_table(report, title), Text(summary(report)))


def _table(report: dict, title: str) -> Table:
    t = Table(title=title)
    for col in ("group", "params", "bytes", "bf16 bytes"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for name, g in report["groups"].items():
        bf16 = g["params"] * BF16_BYTES if name not in ("scales", "header + metadata") else 0
        t.add_row(name, f"{g['params']:,}", human_bytes(g["bytes"]), human_bytes(bf16) if bf16 else "")
    t.add_row("[bold]total[/]", f"{report['params']:,}", human_bytes(report["file_bytes"]),
              human_bytes(report["bf16_bytes"]))
    return t


def describe_packed(path: Path) -> Group:
    """`mmfree info` for a packed directory (loaded to prove it works) or a bare packed file."""
    from ..formats.packed import WEIGHTS, read_packed
    packed = read_packed(path)  # checks manifest, sha256s and the safetensors checksum
    weights = path / packed.manifest.get("weights", WEIGHTS) if path.is_dir() else path
    report = size_report(packed, weights, packed.layout, packed.float_dtype, packed.embedding_dtype)
    lines = [f"packed ternary model, format_version {packed.manifest.get('format_version', '1 (bare file)')}",
             _config_line(packed.config), _loads_line(path) if path.is_dir() else None, summary(report)]
    return Group(_table(report, f"mmfree info {path}"), Text("\n".join(filter(None, lines))))


def _config_line(config: dict) -> str | None:
    if not config:
        return None
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")
    return ", ".join(f"{k} {config[k]}" for k in keys if k in config)


def _loads_line(path: Path) -> str:
    from ..formats.ternary import open_model
    model = open_model(path)
    return f"loads: yes ({sum(1 for _ in model.modules())} modules, dequantised torch path)"
