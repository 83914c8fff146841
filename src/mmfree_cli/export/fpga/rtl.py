"""Generate the core's RTL: copy the hand-written modules of templates/fpga/, fill the top-level
wrapper (mmf_top.v.tmpl) with the build's parameters and design ID, write the table images.

The Python side never writes logic: it only picks parameters and fills the wrapper. The design ID
is a digest of the parameters, every source file and the tables, so a card whose DESIGN_ID
register differs from a bundle's manifest was built from something else.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from string import Template

from ...fileio import write_text
from ...quant.intspec import EPS_M, EPS_S, table_digest
from ...resources import templates_dir
from .compiler import CoreParams
from .memimage import write_tables

SOURCES = ("mmf_math.vh", "mmf_scratch.v", "mmf_mul.v", "mmf_tmv.v", "mmf_rowwise.v", "mmf_norm.v",
           "mmf_scalar.v", "mmf_regs.v", "mmf_axi_master.v", "mmf_core.v")
TOP = "mmf_top.v"
ADDR_W = 64
"""XDMA's AXI address width; the core uses it for every card address."""


def template_dir() -> Path:
    return templates_dir() / "fpga"


def rtl_parameters(params: CoreParams, addr_w: int = ADDR_W) -> dict:
    return {"LANES": params.lanes, "VEC": params.v, "MEM_W": params.mem_w, "SADDR_W": params.saddr_w,
            "XADDR_W": params.xaddr_w, "ADDR_W": addr_w, "KMAX": params.lanes << params.xaddr_w,
            "EPS_M": EPS_M, "EPS_S": EPS_S}


def design_id(params: CoreParams, addr_w: int = ADDR_W) -> str:
    """8 hex digits: sha256 of the parameters, the sources and the tables."""
    h = hashlib.sha256(json.dumps(rtl_parameters(params, addr_w), sort_keys=True).encode())
    for name in SOURCES + (TOP + ".tmpl",):
        h.update((template_dir() / name).read_bytes())
    h.update(table_digest().encode())
    return h.hexdigest()[:8]


def caps_word(params: CoreParams) -> int:
    return params.lanes | params.saddr_w << 16 | params.xaddr_w << 24


def generate(out_dir: Path, params: CoreParams, table_prefix: str = "", addr_w: int = ADDR_W) -> dict:
    """Write the RTL of one build into out_dir; returns {"design_id", "files", "top", "parameters"}.

    `table_prefix` is prepended to the table file names in the top level ($readmemh paths are
    relative to where the tool runs: run simulators and yosys inside rtl/, or pass a prefix).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        write_text(out_dir / name, (template_dir() / name).read_text())
    did = design_id(params, addr_w)
    fields = {k: str(v) for k, v in rtl_parameters(params, addr_w).items()}
    fields.update(DESIGN_ID_HEX=did, CAPS_HEX=f"{caps_word(params):08x}",
                  RSQRT_HEX=f"{table_prefix}rsqrt.hex", SIGMOID_HEX=f"{table_prefix}sigmoid.hex",
                  BUILD=", ".join(f"{k}={v}" for k, v in rtl_parameters(params, addr_w).items()))
    top = Template((template_dir() / (TOP + ".tmpl")).read_text()).substitute(fields)
    write_text(out_dir / TOP, top)
    tables = write_tables(out_dir)
    return {"design_id": did, "top": "mmf_top", "parameters": rtl_parameters(params, addr_w),
            "files": [*SOURCES, TOP, *(p.name for p in tables)]}


def verilog_sources(rtl_dir: Path) -> list[Path]:
    """The compilable files of a generated rtl/ directory, in dependency order (no headers)."""
    return [rtl_dir / n for n in SOURCES + (TOP,) if n.endswith(".v")]
