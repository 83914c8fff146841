"""`mmfree export --target fpga --synth ecp5`: the open flow on the build the export ships, through
the CLI. Slow (yosys, then nextpnr at both speed grades side by side: minutes; the CLI gets 1500 s
on a loaded 2-core machine); CI runs it with -m slow.

Configuration checked: a 1-layer tiny model (tests.conftest.small_config), for which the export
ships a 16-lane core (MEM_W 32) with a small scratch — the whole core (sequencer, every unit,
AXI-Lite slave, AXI4 master), out of context on an LFE5U-85F. Place and route runs at speed −8
and −6 WITHOUT --timing-allow-fail at the floors of synth.FLOOR_MHZ (90 and 70 MHz: a regression
guard below what this build reaches, 105.6 and 79.9 MHz, with a margin for placement noise; the
370M build reaches 96.4 and 75.1 MHz, short of issue #19's 100/80 MHz goal), so a change that drops the Fmax below a floor fails
the export and this test.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmfree_cli.export.fpga.synth import EBR_LIMIT, FLOOR_MHZ
from mmfree_cli.model import HGRNBitForCausalLM, save_pretrained
from tests.conftest import small_config
from tests.helpers import mmfree


@pytest.mark.slow
def test_synth_ecp5_closes_the_floors_and_reports_fmax_and_bitstream(tmp_path):
    torch.manual_seed(0)
    save_pretrained(HGRNBitForCausalLM(small_config(num_hidden_layers=1)).eval(), tmp_path / "run")
    r = mmfree("export", str(tmp_path / "run"), "--target", "fpga", "--synth", "ecp5",
               "-o", str(tmp_path / "out"), timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    synth = json.loads((tmp_path / "out" / man["reports"]["synth"]).read_text())
    assert synth["shipped_build"] and synth["build"] == man["rtl"]["parameters"]
    for speed, floor in FLOOR_MHZ.items():
        assert synth["speed_grades"][str(speed)]["fmax_mhz"] >= floor, (speed, synth["speed_grades"])
    assert synth["fmax_mhz"] == synth["speed_grades"]["8"]["fmax_mhz"]
    assert synth["utilization"]["TRELLIS_COMB"]["used"] > 1000
    assert synth["utilization"].get("DP16KD", {"used": 0})["used"] <= EBR_LIMIT
    est = json.loads((tmp_path / "out" / man["reports"]["estimates"]).read_text())
    assert any(row["clock"].startswith("measured") for row in est["rows"])
    bits = [a for a in man["artifacts"] if a["kind"] == "bitstream"]
    assert len(bits) == 1 and bits[0]["xdma_capable"] is False
    assert (tmp_path / "out" / bits[0]["path"]).stat().st_size > 100_000
