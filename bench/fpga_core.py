"""FPGA core: simulated cycles per token, matrix-vector lane utilisation, and tokens/s ESTIMATES.

Exports a small model (2 layers, d = 64) for a 64-lane core, runs the generated RTL under
cocotb/Icarus (tests/fpga/tb_core.py: two decode steps, no memory stalls, checked bit-exact
against the integer reference) and profiles one step instruction by instruction
(tests/fpga/tb_profile.py). The per-instruction cycle model fitted to that profile is written to
src/mmfree_cli/export/fpga/calibration.json; every bundle's reports/estimates use it.

    python -m bench.fpga_core
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import commit, record  # noqa: E402

LANES = 64
NOTE = "RTL simulation (Icarus via cocotb) on a shared, loaded 2-core machine; cycle counts do not depend on load"


def small_run(root: Path) -> Path:
    import torch

    from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM, save_pretrained
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(HGRNBitConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                                             intermediate_size=128)).eval()
    save_pretrained(model, root / "run")
    return root / "run"


def simulate(bundle: Path, work: Path) -> tuple[dict, list]:
    from mmfree_cli.export.fpga.rtl import verilog_sources
    from tests.fpga.runner import run_cocotb
    rtl = bundle / "rtl"
    run_cocotb("mmf_top", "tb_core", verilog_sources(rtl), work / "b1", includes=[rtl], test_dir=rtl,
               env={"MMF_BUNDLE": bundle, "MMF_STEPS": 2, "MMF_STALL": 0, "MMF_REPORT": work / "core.json"})
    run_cocotb("mmf_top", "tb_profile", verilog_sources(rtl), work / "b2", includes=[rtl], test_dir=rtl,
               env={"MMF_BUNDLE": bundle, "MMF_PROFILE": work / "profile.json"})
    return json.loads((work / "core.json").read_text())["steps"][-1], json.loads((work / "profile.json").read_text())


def main() -> None:
    from mmfree_cli.export.fpga import estimates, export
    from mmfree_cli.fileio import write_json
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export(small_run(work), work / "bundle", lanes=LANES, steps=2)
        dims = json.loads((work / "bundle" / "manifest.json").read_text())["model"]["dims"]
        step, profile = simulate(work / "bundle", work)
    util = step["TMV_ACTIVE"] / step["TMV_WINDOW"]
    cal = {"source": "python -m bench.fpga_core (tests/fpga/tb_profile.py)", "commit": commit(),
           "date": dt.date.today().isoformat(), "lanes": LANES,
           "simulated": {"model_dims": dims, "cycles_per_token": step["CYCLES"],
                         "tmv_active": step["TMV_ACTIVE"], "tmv_window": step["TMV_WINDOW"],
                         "instructions": step["INSTRET"]},
           "costs": estimates.fit(profile),
           "profile": {"columns": ["op", "sub", "n", "matvec_words", "cycles"], "rows": profile}}
    write_json(estimates.CALIBRATION, cal)
    cmd = "python -m bench.fpga_core"
    record("fpga_core", "simulated cycles per token (d=64, 2 layers, 64 lanes)", float(step["CYCLES"]),
           "cycles", command=cmd, notes=NOTE)
    record("fpga_core", "matvec lane utilisation while streaming (simulated)", 100 * util, "%",
           target=">= 90", met=util >= 0.9, command=cmd, notes=NOTE)
    for name, dims_p in estimates.preset_dims().items():
        for lanes in (64, 256):
            e = estimates.estimate(dims_p, cal["costs"], lanes)
            record("fpga_core", f"{name} tokens/s ESTIMATE ({lanes} lanes, {e['clock_mhz']:g} MHz, "
                   f"{e['mem_bw_gb_s']:g} GB/s)", e["tokens_per_s"], "tok/s", command=cmd,
                   notes="ESTIMATE: simulated-cycle model at an assumed clock and bandwidth, not measured on hardware")
    print(json.dumps(cal, indent=1))


if __name__ == "__main__":
    main()
