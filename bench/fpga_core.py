"""FPGA core: the cycle model's calibration and its check against RTL simulation, tokens/s
ESTIMATES, and the core's post-route Fmax on ECP5.

Calibration: a mid-size model (d = 256, 2 layers, I = 768, vocab 256) is exported for 16, 64 and
256 lanes; for each, the generated RTL runs one decode step under cocotb/Icarus with a zero-latency
memory, profiled instruction by instruction (tests/fpga/tb_profile.py), and the per-instruction
(a, b) costs are fitted (export/fpga/estimates.py). Check: the same step with a memory of
LATENCY cycles of read latency (tests/fpga/tb_core.py, checked bit-exact against the integer
reference) against the model's prediction. Both go to src/mmfree_cli/export/fpga/calibration.json
and to bench/results.csv.

    python -m bench.fpga_core                 # calibration, check, estimates
    python -m bench.fpga_core --refit         # the same from the simulations calibration.json holds
    python -m bench.fpga_core --fmax          # also yosys + nextpnr of the 370M build (slow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import commit, record  # noqa: E402

LANE_COUNTS = (256, 64, 16)   # fastest to simulate first
LATENCY = 100
DIMS = {"hidden_size": 256, "num_hidden_layers": 2, "intermediate_size": 768, "vocab_size": 256}
NOTE = "RTL simulation (Icarus via cocotb) on a shared, loaded 2-core machine; cycle counts do not depend on load"


def mid_run(root: Path) -> Path:
    import torch

    from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM, save_pretrained
    torch.manual_seed(0)
    save_pretrained(HGRNBitForCausalLM(HGRNBitConfig(**DIMS)).eval(), root / "run")
    return root / "run"


def simulate(bundle: Path, work: Path, latency: int) -> tuple[dict, list]:
    """One decode step. latency 0: the per-instruction profile (and its total); otherwise the
    core's counters, the logits checked bit-exact."""
    from mmfree_cli.export.fpga.rtl import verilog_sources
    from tests.fpga.runner import run_cocotb
    rtl = bundle / "rtl"
    env = {"MMF_BUNDLE": bundle, "MMF_LATENCY": latency}
    if latency:
        run_cocotb("mmf_top", "tb_core", verilog_sources(rtl), work / f"core{latency}", includes=[rtl],
                   test_dir=rtl, env=env | {"MMF_STEPS": 1, "MMF_STALL": 0, "MMF_REPORT": work / f"core{latency}.json"})
        return json.loads((work / f"core{latency}.json").read_text())["steps"][-1], []
    run_cocotb("mmf_top", "tb_profile", verilog_sources(rtl), work / "prof", includes=[rtl], test_dir=rtl,
               env=env | {"MMF_PROFILE": work / "profile.json"})
    profile = json.loads((work / "profile.json").read_text())
    return {"CYCLES": sum(r[4] for r in profile)}, profile


def calibrate(run: Path, work: Path, lanes: int) -> dict:
    from mmfree_cli.export.fpga import estimates, export
    from mmfree_cli.export.fpga.compiler import compile_program, fit_core
    bundle = work / f"bundle{lanes}"
    export(run, bundle, lanes=lanes, steps=1)
    dims = json.loads((bundle / "manifest.json").read_text())["model"]["dims"]
    step0, profile = simulate(bundle, work, 0)
    step_l, _ = simulate(bundle, work, LATENCY)
    params = fit_core(dims, lanes)
    costs = estimates.fit(profile, params.v)
    predicted = estimates.cycles_per_token(compile_program(dims, params), params, costs, 1.0, 1e30, LATENCY)
    err = predicted["cycles"] / step_l["CYCLES"] - 1
    return {"costs": costs, "vec": params.v, "dims": dims, "cycles_latency0": step0["CYCLES"],
            "cycles_latency": step_l["CYCLES"], "predicted_latency": round(predicted["cycles"]),
            "error_pct": round(100 * err, 2), "tmv_active": step_l["TMV_ACTIVE"],
            "profile": {"columns": ["op", "sub", "n", "matvec_words", "cycles"], "rows": profile}}


def refit(cal: dict) -> dict:
    """The calibration's per-lane entries with the costs fitted again to their stored profiles and
    the check recomputed against their stored RTL cycle counts (the same simulations)."""
    from mmfree_cli.export.fpga import estimates
    from mmfree_cli.export.fpga.compiler import compile_program, fit_core
    by = {}
    for lanes, v in cal["by_lanes"].items():
        params = fit_core(v["dims"], int(lanes))
        costs = estimates.fit(v["profile"]["rows"], params.v)
        predicted = estimates.cycles_per_token(compile_program(v["dims"], params), params, costs, 1.0, 1e30, LATENCY)
        by[lanes] = v | {"costs": costs, "predicted_latency": round(predicted["cycles"]),
                         "error_pct": round(100 * (predicted["cycles"] / v["cycles_latency"] - 1), 2),
                         "simulated_at": v.get("simulated_at", cal["commit"])}
    return by


def simulator_versions() -> dict:
    import shutil
    import subprocess
    out = {}
    for name, flag in (("iverilog", "-V"), ("verilator", "--version")):
        exe = shutil.which(name)
        r = subprocess.run([exe, flag], capture_output=True, text=True) if exe else None
        out[name] = (r.stdout or r.stderr).splitlines()[0] if r and (r.stdout or r.stderr) else "not installed"
    return out


def fmax(done: Path | None = None, seed: int = 1, note: str = "") -> None:
    """yosys + nextpnr (−8 and −6) of the build the export ships for 370M; rows in results.csv.
    `done`: a directory where synth.synthesise and place_and_route already ran (speedN-report.json
    and speedN.log there): record its results instead of running again. `seed`: the placement
    seed it was placed with; `note`: added to the rows' notes."""
    from mmfree_cli.export.fpga import synth
    from mmfree_cli.export.fpga.compiler import fit_core
    from mmfree_cli.export.fpga.estimates import preset_dims
    if done is not None and not any((done / f"speed{s}-report.json").is_file() for s in synth.FLOOR_MHZ):
        print(f"--fmax-from {done}: no speedN-report.json there — give the directory where "
              "synth.synthesise and synth.place_and_route ran", file=sys.stderr)
        raise SystemExit(2)
    params = fit_core(preset_dims()["370m"])
    tools = synth.tool_versions() | simulator_versions()
    cmd = "python -m bench.fpga_core --fmax" + (f" --fmax-from {done} --seed {seed}" if done else "")
    with tempfile.TemporaryDirectory() as tmp:
        work = done or Path(tmp)
        if done is None:
            synth.synthesise(work, params)
            synth.place_speed_grades(work, synth.GOAL_MHZ, strict=False)   # at the goals: docs/fpga-core.md
        for speed in synth.FLOOR_MHZ:
            report = work / f"speed{speed}-report.json"
            if not report.is_file():
                continue
            pnr = json.loads(report.read_text())
            fmax_mhz = min(v["achieved"] for v in pnr["fmax"].values())
            ebr = pnr["utilization"].get("DP16KD", {}).get("used", 0)
            goal = synth.GOAL_MHZ[speed]
            # nextpnr's verdict at the clock it was asked for (--freq): "PASS at 100.00 MHz" or "FAIL at ..."
            log = (work / f"speed{speed}.log").read_text() if (work / f"speed{speed}.log").is_file() else ""
            verdict = re.findall(r"Max frequency for clock [^\n]*\((PASS|FAIL) at ([0-9.]+) MHz\)", log)
            asked = f"nextpnr --freq {float(verdict[-1][1]):g}: {verdict[-1][0]}; " if verdict else ""
            record("fpga_core", f"post-route Fmax, 370M build ({params.lanes} lanes, scratch 2^{params.saddr_w}), "
                   f"LFE5U-85F speed -{speed}", fmax_mhz, "MHz", target=f">= {goal:g}", met=fmax_mhz >= goal,
                   command=cmd, notes=f"out of context (mmf_ooc); VEC {params.v}; EBR {ebr}/208; {asked}seed {seed}; "
                                      f"{note + '; ' if note else ''}{tools}; placed without --timing-allow-fail")


def measured_fmax() -> tuple[float, str] | None:
    """The latest post-route Fmax of the 370M build at speed -8 in results.csv (MHz, its commit)."""
    import csv
    rows = [r for r in csv.DictReader((ROOT / "bench" / "results.csv").open())
            if r["benchmark"] == "fpga_core" and r["metric"].startswith("post-route Fmax, 370M build")
            and r["metric"].endswith("speed -8")]
    return (float(rows[-1]["median"]), rows[-1]["commit"]) if rows else None


def main() -> None:
    from mmfree_cli.export.fpga import estimates
    from mmfree_cli.fileio import write_json
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fmax", action="store_true", help="also synthesise and place the 370M build (slow)")
    ap.add_argument("--fmax-from", type=Path, help="record the Fmax of a finished synth/PnR directory, no runs")
    ap.add_argument("--seed", type=int, default=1, help="with --fmax-from: the placement seed it used (for the notes)")
    ap.add_argument("--note", default="", help="with --fmax-from: added to the rows' notes")
    ap.add_argument("--lanes", type=int, nargs="*", default=list(LANE_COUNTS), help="lane counts to calibrate")
    ap.add_argument("--refit", action="store_true",
                    help="fit the model again to the profiles and latency runs calibration.json holds (no simulation)")
    args = ap.parse_args()
    if not args.fmax_from and (args.seed != 1 or args.note):
        ap.error("--seed and --note describe a finished placement: give them with --fmax-from DIR")
    if args.fmax_from:
        fmax(args.fmax_from, args.seed, args.note)
        return
    if args.refit:
        by = refit(json.loads(estimates.CALIBRATION.read_text()))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            run = mid_run(work)
            by = {str(lanes): calibrate(run, work, lanes) for lanes in args.lanes}
    worst = max(abs(v["error_pct"]) for v in by.values())
    cal = {"source": "python -m bench.fpga_core (tests/fpga/tb_profile.py, tb_core.py)", "commit": commit(),
           "date": dt.date.today().isoformat(), "latency_checked": LATENCY,
           "check": {"summary": f"d=256, 2 layers, {LATENCY}-cycle read latency: model within {worst:.2f}% "
                                f"of RTL at {', '.join(by)} lanes",
                     "by_lanes": {k: {x: v[x] for x in ("cycles_latency", "predicted_latency", "error_pct")}
                                  for k, v in by.items()}},
           "by_lanes": by}
    write_json(estimates.CALIBRATION, cal)
    cmd = "python -m bench.fpga_core"
    for lanes, v in by.items():
        record("fpga_core", f"cycle model vs RTL, d=256 2 layers, {lanes} lanes, {LATENCY}-cycle latency (error)",
               v["error_pct"], "%", target="|e| <= 3", met=abs(v["error_pct"]) <= 3, command=cmd,
               notes=f"RTL {v['cycles_latency']} cycles, model {v['predicted_latency']}; {NOTE}"
                     + (f"; model refitted to the profiles simulated at {v['simulated_at']}" if "simulated_at" in v else ""))
    measured = measured_fmax()
    clocks = [(250e6, "250 MHz what-if clock")] + ([(measured[0] * 1e6, "measured ECP5 Fmax at -8")] if measured else [])
    for clock, what in clocks:
        for lanes in (256, 64):
            e = estimates.estimate(estimates.preset_dims()["370m"], cal, lanes, clock)
            goal = lanes == 256 and clock == 250e6
            at = "" if clock == 250e6 else f"clock {clock / 1e6:g} MHz = the Fmax row of the 64-lane build at {measured[1]}; "
            record("fpga_core", f"370m tokens/s ESTIMATE ({lanes} lanes, {what}, 19.2 GB/s, "
                   f"{LATENCY}-cycle latency)", e["tokens_per_s"], "tok/s", target=">= 150" if goal else "",
                   met=(e["tokens_per_s"] >= 150) if goal else None, command=cmd,
                   notes=f"ESTIMATE, not measured on hardware; {e['cycles_per_token']} cycles/token, "
                         + at
                         + f"{e['bytes_per_token']} bytes/token, {e['pct_of_roofline']}% of the "
                         f"{e['roofline_tokens_per_s']} tok/s roofline")
            record("fpga_core", f"370m matvec busy, share of the token ESTIMATE ({lanes} lanes, {what}, "
                   f"{LATENCY}-cycle latency)", e["matvec_busy_pct"], "%",
                   target=">= 80" if goal else "", met=(e["matvec_busy_pct"] >= 80) if goal else None,
                   command=cmd, notes=f"ESTIMATE: {at}cycles the matrix-vector unit takes a weight word / all cycles")
    if args.fmax:
        fmax()
    print(json.dumps(cal["check"], indent=1))


if __name__ == "__main__":
    main()
