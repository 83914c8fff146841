"""Tokens/s estimates for the bundle's reports/, derived from simulated cycles. ESTIMATES: nothing
here ran on a card.

The model: every instruction costs a + b·n cycles (n = elements, or weight words for MATVEC),
with (a, b) per instruction kind fitted to the per-instruction cycle counts of the RTL simulating
one decode step (where the profile has one size only, b is the structural one element a cycle) (bench/fpga_core.py writes calibration.json from tests/fpga/tb_profile.py).
A model's cycles per token are that sum over its compiled program; MATVEC words are further
bounded by memory bandwidth: a word of MEM_W bits a cycle needs clock·MEM_W/8 bytes/s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...fileio import write_json, write_text
from ...model.config import presets
from .compiler import Compiled, CoreParams, compile_program, fit_core

CALIBRATION = Path(__file__).with_name("calibration.json")
CLOCK_HZ = 250e6
"""Assumed core clock: XDMA's axi_aclk on a PCIe Gen3 x16 UltraScale+ card (not measured here)."""
MEM_BW = 19.2e9
"""Assumed card-memory bandwidth: one DDR4-2400 64-bit channel, bytes/s (not measured here)."""
LABEL = ("ESTIMATE from simulated cycles (RTL simulation of the tiny model + a fitted per-instruction "
         "cycle model) at an assumed clock and memory bandwidth; not measured on hardware")


def kind(op: str, sub: str | None) -> str:
    return f"{op}.{sub}" if op in ("SCALAR", "ROW", "NORM") else op


def fit(profile: list[list]) -> dict:
    """Per instruction kind (a, b) with cycles ≈ a + b·size, least squares over the profile."""
    by: dict[str, list[tuple[float, float]]] = {}
    for op, sub, n, words, cycles in profile:
        by.setdefault(kind(op, sub), []).append((words if op == "MATVEC" else n, cycles))
    out = {}
    for k, pts in by.items():
        x, y = np.array(pts, dtype=float).T
        if np.ptp(x) == 0:
            # one size only: take the pass engine's structural rate, one element a cycle
            b = 1.0 if x[0] > 0 else 0.0
            out[k] = [float((y - b * x).mean()), b]
        else:
            b, a = np.polyfit(x, y, 1)
            out[k] = [float(a), float(b)]
    return out


def cycles_per_token(compiled: Compiled, params: CoreParams, costs: dict, clock_hz: float,
                     mem_bw: float) -> dict:
    words_per_cycle = min(1.0, mem_bw / (clock_hz * params.mem_w / 8))
    matvec = other = 0.0
    for i in compiled.program:
        a, b = costs.get(kind(i.op, i.sub), costs.get(i.op, [0.0, 0.0]))
        if i.op == "MATVEC":
            matvec += a + max(b, 1.0 / words_per_cycle) * i.n * i.a
        else:
            other += a + b * i.n
    return {"cycles": matvec + other, "matvec_cycles": matvec, "other_cycles": other}


def estimate(dims: dict, costs: dict, lanes: int | None = None, clock_hz: float = CLOCK_HZ,
             mem_bw: float = MEM_BW) -> dict:
    params = fit_core(dims, lanes)
    c = cycles_per_token(compile_program(dims, params), params, costs, clock_hz, mem_bw)
    return {"lanes": params.lanes, "mem_w": params.mem_w, "clock_mhz": clock_hz / 1e6,
            "mem_bw_gb_s": mem_bw / 1e9, "cycles_per_token": round(c["cycles"]),
            "matvec_share": round(c["matvec_cycles"] / c["cycles"], 3),
            "tokens_per_s": round(clock_hz / c["cycles"], 2)}


def preset_dims() -> dict[str, dict]:
    out = {}
    for name in ("370m", "1.3b", "2.7b"):
        p = presets()[name]
        d = p["hidden_size"]
        inner = p.get("intermediate_size") or 256 * ((int(d * 4 * 2 / 3) + 255) // 256)
        out[name] = {"d": d, "layers": p["num_hidden_layers"], "inner": inner, "vocab": p.get("vocab_size", 32000)}
    return out


def write_report(out: Path, compiled: Compiled, params: CoreParams) -> str:
    """reports/estimates.json and .md: this model and the released sizes, labelled ESTIMATE."""
    report: dict = {"label": LABEL, "matvec_words_per_token": compiled.matvec_words}
    if not CALIBRATION.is_file():
        report["note"] = "no calibration.json yet: run `python -m bench.fpga_core` to derive one"
        write_json(out / "estimates.json", report)
        return "reports/estimates.json"
    cal = json.loads(CALIBRATION.read_text())
    costs = cal["costs"]
    report["calibration"] = {k: cal[k] for k in ("source", "commit", "date", "lanes", "simulated")}
    report["assumptions"] = {"clock_mhz": CLOCK_HZ / 1e6, "mem_bw_gb_s": MEM_BW / 1e9}
    this = cycles_per_token(compiled, params, costs, CLOCK_HZ, MEM_BW)
    report["this_model"] = {"lanes": params.lanes, "cycles_per_token": round(this["cycles"]),
                            "tokens_per_s": round(CLOCK_HZ / this["cycles"], 2)}
    report["released_sizes"] = {name: [estimate(dims, costs, lanes) for lanes in (64, 256)]
                                for name, dims in preset_dims().items()}
    write_json(out / "estimates.json", report)
    lines = ["# Throughput estimates", "", f"**{LABEL}.**", "",
             f"Clock {CLOCK_HZ / 1e6:g} MHz, card memory {MEM_BW / 1e9:g} GB/s (assumptions). "
             f"Cycle model fitted to RTL simulation: {cal['source']} (commit {cal['commit']}, {cal['date']}).", "",
             "| model | lanes | cycles/token | matvec share | tokens/s (estimate) |", "|---|---|---|---|---|",
             f"| this model | {params.lanes} | {report['this_model']['cycles_per_token']} | "
             f"{this['matvec_cycles'] / this['cycles']:.3f} | {report['this_model']['tokens_per_s']} |"]
    for name, rows in report["released_sizes"].items():
        lines += [f"| {name} | {r['lanes']} | {r['cycles_per_token']} | {r['matvec_share']} | {r['tokens_per_s']} |"
                  for r in rows]
    write_text(out / "estimates.md", "\n".join(lines) + "\n")
    return "reports/estimates.json"
