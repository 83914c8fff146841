"""The FPGA bundle (docs/design.md §5): manifest.json, weights.bin, embed.safetensors, rtl/, golden/,
reports/ and an optional bitstream/. Written into the directory `run_export` hands us, which it
renames into place only when everything is there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ...fileio import save_safetensors, sha256_file, write_bytes
from ...hardware import isa, regmap
from ...hardware.image import BLOCK_ALIGN, LAYOUT
from ...quant import intref
from ...quant.intspec import SPEC_VERSION, table_digest
from .compiler import Compiled, CoreParams, state_stride


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
    layout = regmap.card_memory_map(len(compiled.image), d["d"], d["vocab"], d["layers"],
                                    state_stride=state_stride(d["d"]))
    layout["state"]["row_stride"] = state_stride(d["d"])
    return layout


def manifest(compiled: Compiled, params: CoreParams, rtl_info: dict, config: dict, mhash: str,
             golden: dict, artifacts: list[dict], reports: dict) -> dict:
    layout = card_layout(compiled)
    return {
        "design_id": rtl_info["design_id"],
        "model": {"config": config, "sha256": mhash, "dims": compiled.dims},
        "integer_spec": {"version": SPEC_VERSION, "tables_sha256": table_digest(),
                         "doc": "docs/integer-spec.md", "reference": "mmfree_cli.quant.intref"},
        "register_map": {"version": regmap.VERSION, "magic": regmap.MAGIC,
                         "registers": regmap.register_table(), "irq": regmap.IRQ_DONE,
                         "protocol": "see mmfree_cli.hardware.regmap (module docstring)"},
        "card_memory_map": layout,
        "registers_to_write": {"WEIGHTS": layout["weights"]["offset"],
                               "PROG": layout["weights"]["offset"] + compiled.program_offset,
                               "IN": layout["in"]["offset"], "OUT": layout["out"]["offset"],
                               "STATE": layout["state"]["offset"]},
        "weights": {"file": "weights.bin", "bytes": len(compiled.image), "layout": LAYOUT,
                    "block_align": BLOCK_ALIGN, "lanes": params.lanes,
                    "layout_doc": "mmfree_cli.hardware.image (module docstring)",
                    "blocks": [b.describe() for b in compiled.blocks]},
        "program": {"instructions": len(compiled.program), "slot_bytes": isa.slot_bytes(params.mem_w),
                    "isa_doc": "mmfree_cli.hardware.isa (module docstring)",
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


README = """# mmfree FPGA bundle

Model `{model}` compiled for the mmfree core (design ID `{design_id}`, {lanes} lanes, MEM_W {mem_w}).

| file | what |
|---|---|
| manifest.json | schema, model hash, integer spec, register map, card memory map, weight blocks (sha256), RTL parameters, artifacts |
| weights.bin | card image: constants, ternary matrices, program; every block 4 KiB-aligned (layout `{layout}`) |
| embed.safetensors | int32 Q15.16 embedding rows: the host writes row t to IN each step |
| rtl/ | generated Verilog-2005 (top `mmf_top`), table images `*.hex` for $readmemh |
| golden/ | {steps} decode steps from the zero state with the integer reference's logits and final state |
| reports/ | throughput ESTIMATES (and synthesis results with --synth): nothing here was measured on a card |
| mmfree_core.core, sim/ | the core as a FuseSoC core: `fusesoc --cores-root . run --target sim {core}` runs the golden steps on it (Icarus) |
{vivado_row}
## Dropping the core into a vendor block design (XDMA) — untested here

Not tried on hardware in this project; the steps follow the XDMA product guide's usual layout.
For a supported board, `mmfree export --target fpga --board vcu118` writes all of this as Vivado
scripts (vivado/, with its own README).

1. Add every `rtl/*.v` file and `rtl/mmf_math.vh` as design sources, and `rtl/sigmoid.hex`,
   `rtl/rsqrt.hex` as memory-initialisation files (the $readmemh paths are relative; point them at
   the project or copy the files into the simulation/synthesis run directory).
2. Add `mmf_top` to the block design as an RTL module. Give `clk` its own clock from a Clocking
   Wizard at or below the core's Fmax (reports/synth.json with --synth), not XDMA's `axi_aclk`
   (250 MHz: more than the core closes at), with a reset block in that domain for `aresetn`.
3. `s_axil_*` (AXI4-Lite, 12 address bits): connect to XDMA's `M_AXI_LITE` (the PCIe-to-AXI-Lite
   master, BAR0 — the host's `/dev/xdma0_user`) through a SmartConnect; give it a 4 KiB segment at
   offset 0 of that BAR.
4. `m_axi_*` (AXI4, 64-bit addresses, {mem_w}-bit data): connect to the same SmartConnect /
   memory controller (MIG DDR4 or HBM) that XDMA's `M_AXI` (the DMA `h2c`/`c2h` path) reaches, so
   that the host's DMA offsets and the core's addresses are the same card addresses.
5. `irq` to XDMA `usr_irq_req[0]` through a two-flop synchroniser into `axi_aclk` (enable one user
   interrupt in the XDMA IP).
6. Build the bitstream with the vendor tools, program the card, then run `mmfree deploy`: it checks
   MAGIC, VERSION and DESIGN_ID (`{design_id}`) against this manifest before anything else.

The host protocol (register offsets, START/DONE/IRQ handshake, buffers) is in the manifest's
`register_map` and `card_memory_map`, and documented in `mmfree_cli.hardware.regmap`.
"""


def write_readme(out: Path, man: dict, model_name: str) -> None:
    from ...fileio import write_text
    p = man["rtl"]["parameters"]
    board = man.get("board")
    vivado_row = "" if board is None else (
        f"| vivado/ | Vivado build for the {board['name']} (XDMA + DDR4, core clock {board['core_clock_mhz']} MHz): "
        "`vivado -mode batch -source vivado/build.tcl`; see vivado/README.md — never run here |\n")
    from .fusesoc import core_name
    write_text(out / "README.md", README.format(model=model_name, design_id=man["design_id"],
                                                lanes=p["LANES"], mem_w=p["MEM_W"], layout=LAYOUT,
                                                steps=man["golden"]["steps"], vivado_row=vivado_row,
                                                core=core_name(man["design_id"])))
