"""The FPGA bundle (DESIGN.md §5): manifest.json, weights.bin, embed.safetensors, rtl/, golden/,
reports/ and an optional bitstream/. Written into the directory `run_export` hands us, which it
renames into place only when everything is there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ...fileio import save_safetensors, sha256_file, write_bytes, write_json
from ...quant import intref
from ...quant.intspec import SPEC_VERSION, table_digest
from . import isa, regmap
from .compiler import Compiled, CoreParams, state_stride
from .image import BLOCK_ALIGN, LAYOUT

SCHEMA_VERSION = 1


def model_hash(model_dir: Path) -> str:
    """sha256 over the model's config and weight files (names and bytes, in name order)."""
    h = hashlib.sha256()
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"):
            h.update(p.name.encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def golden_tokens(vocab: int, steps: int, bos: int) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.concatenate([[bos % vocab], rng.integers(0, vocab, steps - 1)]).astype(np.int64)


def write_golden(out: Path, model: dict, steps: int, bos: int) -> dict:
    """golden/vectors.safetensors: `steps` decode steps from the empty state, as intref runs them."""
    tokens = golden_tokens(model["embed"].shape[0], steps, bos)
    state = intref.new_state(model, 1)
    rows, logits = [], []
    for t in tokens:
        x = intref.embed(model, [t])
        y, state = intref.step(model, x, state)
        rows.append(x[0])
        logits.append(y[0])
    tensors = {"tokens": torch.from_numpy(tokens),
               "embed_rows": torch.from_numpy(np.stack(rows).astype(np.int32)),
               "logits": torch.from_numpy(np.stack(logits).astype(np.int32)),
               "state": torch.from_numpy(state[:, 0].astype(np.int32))}
    save_safetensors(tensors, out / "golden" / "vectors.safetensors",
                     {"what": "decode steps from the zero state: embed_rows in, logits (Q15.16) out, "
                              "final state (Q11.20)"})
    return {"path": "golden/vectors.safetensors", "steps": steps, "tokens": tokens.tolist()}


def card_layout(compiled: Compiled) -> dict:
    d = compiled.dims
    layout = regmap.card_memory_map(len(compiled.image), d["d"], d["vocab"], d["layers"])
    layout["state"]["bytes"] = d["layers"] * state_stride(d["d"])
    layout["state"]["row_stride"] = state_stride(d["d"])
    return layout


def manifest(compiled: Compiled, params: CoreParams, rtl_info: dict, config: dict, mhash: str,
             golden: dict, artifacts: list[dict], reports: dict) -> dict:
    layout = card_layout(compiled)
    return {
        "schema_version": SCHEMA_VERSION,
        "target": "fpga",
        "design_id": rtl_info["design_id"],
        "model": {"config": config, "sha256": mhash, "dims": compiled.dims},
        "integer_spec": {"version": SPEC_VERSION, "tables_sha256": table_digest(),
                         "doc": "docs/integer-spec.md", "reference": "mmfree_cli.quant.intref"},
        "register_map": {"version": regmap.VERSION, "magic": regmap.MAGIC,
                         "registers": regmap.register_table(), "irq": regmap.IRQ_DONE,
                         "protocol": "see mmfree_cli.export.fpga.regmap (module docstring)"},
        "card_memory_map": layout,
        "registers_to_write": {"WEIGHTS": layout["weights"]["offset"],
                               "PROG": layout["weights"]["offset"] + compiled.program_offset,
                               "IN": layout["in"]["offset"], "OUT": layout["out"]["offset"],
                               "STATE": layout["state"]["offset"]},
        "weights": {"file": "weights.bin", "bytes": len(compiled.image), "layout": LAYOUT,
                    "block_align": BLOCK_ALIGN, "lanes": params.lanes,
                    "layout_doc": "mmfree_cli.export.fpga.image (module docstring)",
                    "blocks": [b.describe() for b in compiled.blocks]},
        "program": {"instructions": len(compiled.program), "slot_bytes": isa.slot_bytes(params.mem_w),
                    "isa_doc": "mmfree_cli.export.fpga.isa (module docstring)",
                    "matvec_words_per_token": compiled.matvec_words},
        "rtl": {"dir": "rtl", "top": rtl_info["top"], "parameters": rtl_info["parameters"],
                "language": "Verilog-2005", "files": rtl_info["files"]},
        "host": {"embed": "embed.safetensors (int32 [vocab, d], Q15.16: write row t to IN)",
                 "logits": "int32 [vocab] Q15.16 at OUT: float = value / 2^16"},
        "golden": golden,
        "reports": reports,
        "artifacts": artifacts,
    }


def artifact(out: Path, rel: str, kind: str, provenance: str, xdma_capable: bool | None = None) -> dict:
    entry = {"path": rel, "kind": kind, "provenance": provenance, "sha256": sha256_file(out / rel)}
    if xdma_capable is not None:
        entry["xdma_capable"] = xdma_capable
    return entry


def write_weights(out: Path, compiled: Compiled, model: dict) -> None:
    write_bytes(out / "weights.bin", compiled.image)
    save_safetensors({"embed": torch.from_numpy(np.ascontiguousarray(model["embed"]))},
                     out / "embed.safetensors", {"format": "int32 Q15.16 embedding rows"})
