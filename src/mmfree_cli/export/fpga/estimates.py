"""Tokens/s ESTIMATES for the bundle's reports/, from a cycle model calibrated on RTL simulation.
Nothing here ran on a card.

The cycle model: every instruction costs a + b·size cycles (size = weight words for MATVEC, else
the rows of VEC elements its vectors take), with (a, b) per instruction kind fitted, per lane
count, to the per-instruction cycle counts of the RTL simulating one decode step with a
zero-latency memory (bench/fpga_core.py writes calibration.json from tests/fpga/tb_profile.py).
Two terms are added:

- read latency: every read round trip the sequencer waits for pays the memory's latency L once —
  each LOAD, each MATVEC's first burst (later bursts are pipelined) and the first instruction
  fetch; later fetches are prefetched while the core works, and a LOAD's or MATVEC's read is
  issued while the pass or scalar command before it runs, so it waits max(0, L - that one's cycles);
- bandwidth: a MATVEC streams at most min(1, BW / (clock·MEM_W/8)) words a cycle.

The same bench checks the model against RTL simulation with L = 100 (the error is in the
calibration). Assumptions are named in every report: the clock (the measured Fmax of the same
bundle's synthesis when there is one, and a what-if clock), the memory bandwidth and latency.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...fileio import write_json, write_text
from ...hardware.isa import slot_bytes
from ...model.config import presets
from .compiler import Compiled, CoreParams, compile_program, fit_core

CALIBRATION = Path(__file__).with_name("calibration.json")
CLOCK_HZ = 250e6
"""What-if core clock: XDMA's axi_aclk on a PCIe Gen3 x16 UltraScale+ card (not measured here)."""
MEM_BW = 19.2e9
"""Assumed card-memory bandwidth: one DDR4-2400 64-bit channel, bytes/s (not measured here)."""
LATENCY = 100
"""Assumed card-memory read latency in core cycles, address to first data (a DDR4 controller)."""
STALE = ("calibration.json predates the pipelined core (one lane count, no latency check): its costs are "
         "the previous RTL's; run `python -m bench.fpga_core` to recalibrate")
LABEL = ("ESTIMATE from a cycle model calibrated on RTL simulation, at a stated clock, memory "
         "bandwidth and read latency; not measured on hardware")


def kind(op: str, sub: str | None) -> str:
    return f"{op}.{sub}" if op in ("SCALAR", "ROW", "NORM") else op


EARLY_READ_DURING = ("ROW", "NORM", "SCALAR")
"""Instructions during which the core issues the next instruction's read (a LOAD's or MATVEC's)."""


def round_trips(op: str) -> int:
    """Read round trips an instruction waits for: the data of a LOAD or MATVEC, less the part of the
    latency the instruction before hides (fetches are prefetched: only the program's first pays)."""
    return int(op in ("LOAD", "MATVEC"))


def size(op: str, n: int, words: int, vec: int) -> int:
    """What an instruction's cycles grow with: weight words (MATVEC), else rows of vec elements."""
    return words if op == "MATVEC" else -(-n // vec)


OPERANDS = {"ROW.FGATE": 2, "ROW.ADD": 2, "ROW.RECUR": 3, "NORM.NORM16MUL": 2}
"""Scratch reads per row of a pass (the core reads a row's operands one a cycle); others 1."""


def fit(profile: list[list], vec: int = 1) -> dict:
    """Per instruction kind (a, b) with cycles ≈ a + b·size, least squares over the profile."""
    by: dict[str, list[tuple[float, float]]] = {}
    for op, sub, n, words, cycles in profile:
        by.setdefault(kind(op, sub), []).append((size(op, n, words, vec), cycles))
    out = {}
    for k, pts in by.items():
        x, y = np.array(pts, dtype=float).T
        if np.ptp(x) == 0:
            # one size only: the structural rate, a row's operands one a cycle
            b = float(OPERANDS.get(k, 1)) if x[0] > 0 else 0.0
            out[k] = [float((y - b * x).mean()), b]
        else:
            b, a = np.polyfit(x, y, 1)
            out[k] = [float(a), float(b)]
    return out


def costs_for(cal: dict, lanes: int) -> tuple[dict, int]:
    """The calibration of this lane count, else of the nearest calibrated one (returned)."""
    by = cal.get("by_lanes") or {str(cal.get("lanes", 64)): {"costs": cal["costs"]}}
    near = min(by, key=lambda k: abs(int(k) - lanes))
    return by[near]["costs"], int(near)


def cycles_per_token(compiled: Compiled, params: CoreParams, costs: dict, clock_hz: float,
                     mem_bw: float, latency: float) -> dict:
    words_per_cycle = min(1.0, mem_bw / (clock_hz * params.mem_w / 8))
    matvec = other = busy = 0.0
    wait = float(latency)                     # the first instruction fetch
    prev_op, prev_cycles = "END", 0.0
    for i in compiled.program:
        a, b = costs.get(kind(i.op, i.sub), costs.get(i.op, [0.0, 0.0]))
        if round_trips(i.op):
            # the read is issued early while a pass or scalar command before it runs
            hidden = prev_cycles if prev_op in EARLY_READ_DURING else 0.0
            wait += max(0.0, latency - hidden)
        if i.op == "MATVEC":
            cycles = a + max(b, 1.0 / words_per_cycle) * i.n * i.a
            matvec += cycles
            busy += i.n * i.a
        else:
            cycles = a + b * size(i.op, i.n, 0, params.v)
            other += cycles
        prev_op, prev_cycles = i.op, cycles
    total = matvec + other + wait
    return {"cycles": total, "matvec_cycles": matvec, "other_cycles": other, "latency_cycles": wait,
            "matvec_busy": busy / total}


def bytes_per_token(compiled: Compiled, params: CoreParams) -> int:
    """Card-memory bytes one token moves: weight words, program, LOADs and STOREs."""
    total = compiled.matvec_words * params.mem_w // 8 + len(compiled.program) * slot_bytes(params.mem_w)
    for i in compiled.program:
        if i.op in ("LOAD", "STORE"):
            total += 4 * i.n
    return total


def estimate(dims: dict, cal: dict, lanes: int | None, clock_hz: float, mem_bw: float = MEM_BW,
             latency: float = LATENCY) -> dict:
    params = fit_core(dims, lanes)
    return row(compile_program(dims, params), params, cal, clock_hz, mem_bw, latency)


def row(compiled: Compiled, params: CoreParams, cal: dict, clock_hz: float, mem_bw: float,
        latency: float) -> dict:
    costs, cal_lanes = costs_for(cal, params.lanes)
    c = cycles_per_token(compiled, params, costs, clock_hz, mem_bw, latency)
    nbytes = bytes_per_token(compiled, params)
    tps = clock_hz / c["cycles"]
    roof = mem_bw / nbytes
    return {"lanes": params.lanes, "calibrated_at_lanes": cal_lanes, "clock_mhz": round(clock_hz / 1e6, 2),
            "mem_bw_gb_s": mem_bw / 1e9, "latency_cycles": latency,
            "cycles_per_token": round(c["cycles"]), "tokens_per_s": round(tps, 2),
            "bytes_per_token": nbytes, "roofline_tokens_per_s": round(roof, 2),
            "pct_of_roofline": round(100 * tps / roof, 1),
            "matvec_busy_pct": round(100 * c["matvec_busy"], 1)}


def preset_dims() -> dict[str, dict]:
    out = {}
    for name in ("370m", "1.3b", "2.7b"):
        p = presets()[name]
        d = p["hidden_size"]
        inner = p.get("intermediate_size") or 256 * ((int(d * 4 * 2 / 3) + 255) // 256)
        out[name] = {"d": d, "layers": p["num_hidden_layers"], "inner": inner, "vocab": p.get("vocab_size", 32000)}
    return out


COLUMNS = ("model", "lanes", "clock", "clock MHz", "cycles/token", "tokens/s", "bytes/token", "roofline tok/s",
           "% of roofline", "matvec busy %")


def _md_row(name: str, clock: str, r: dict) -> str:
    return (f"| {name} | {r['lanes']} | {clock} | {r['clock_mhz']:g} | {r['cycles_per_token']} | {r['tokens_per_s']} | "
            f"{r['bytes_per_token']} | {r['roofline_tokens_per_s']} | {r['pct_of_roofline']} | "
            f"{r['matvec_busy_pct']} |")


def write_report(out: Path, compiled: Compiled, params: CoreParams, fmax_mhz: float | None = None) -> str:
    """reports/estimates.json and .md: this model and the released sizes, at the measured Fmax of
    this bundle's synthesis (when given) and at the what-if clock, labelled ESTIMATE."""
    report: dict = {"label": LABEL, "matvec_words_per_token": compiled.matvec_words}
    if not CALIBRATION.is_file():
        report["note"] = "no calibration.json yet: run `python -m bench.fpga_core` to derive one"
        write_json(out / "estimates.json", report)
        return "reports/estimates.json"
    cal = json.loads(CALIBRATION.read_text())
    clocks = {"what-if": CLOCK_HZ}
    if fmax_mhz:
        clocks["measured Fmax (this bundle's synth)"] = fmax_mhz * 1e6
    report["calibration"] = {k: cal.get(k) for k in ("source", "commit", "date", "check")}
    if "by_lanes" not in cal:
        report["calibration"]["stale"] = STALE
    report["assumptions"] = {"clocks_mhz": {k: v / 1e6 for k, v in clocks.items()},
                             "mem_bw_gb_s": MEM_BW / 1e9, "read_latency_cycles": LATENCY,
                             "write_latency": "not modelled: writes are posted and only END waits for them",
                             "lanes_not_calibrated": "use the nearest calibrated lane count's costs"}
    report["rows"] = []
    lines = ["# Throughput estimates", "", f"**{LABEL}.**", "",
             f"Memory {MEM_BW / 1e9:g} GB/s with {LATENCY} cycles of read latency (assumptions). Cycle model "
             f"calibrated on RTL simulation: {cal['source']} (commit {cal['commit']}, {cal['date']}); "
             f"checked against RTL with latency: {cal.get('check', {}).get('summary', 'no check recorded')}.",
             "Roofline = bandwidth / bytes per token; matvec busy = cycles the matrix-vector unit takes "
             "a weight word / all cycles of the token.", *([f"**{STALE}**"] if "by_lanes" not in cal else []), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for label, hz in clocks.items():
        this = row(compiled, params, cal, hz, MEM_BW, LATENCY)
        report["rows"].append({"model": "this model", "clock": label, **this})
        lines.append(_md_row("this model", label, this))
        for name, dims in preset_dims().items():
            for lanes in (64, 256):
                r = estimate(dims, cal, lanes, hz)
                report["rows"].append({"model": name, "clock": label, **r})
                lines.append(_md_row(name, label, r))
    write_json(out / "estimates.json", report)
    write_text(out / "estimates.md", "\n".join(lines) + "\n")
    return "reports/estimates.json"
