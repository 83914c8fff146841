"""`mmfree export --target fpga --synth ecp5`: the open flow on the small build, through the CLI.
Slow (yosys + nextpnr take minutes); CI runs it with -m slow."""

from __future__ import annotations

import json

import pytest
import torch

from mmfree_cli.model import HGRNBitForCausalLM, save_pretrained
from tests.conftest import small_config
from tests.helpers import mmfree


@pytest.mark.slow
def test_synth_ecp5_reports_utilisation_fmax_and_bitstream(tmp_path):
    torch.manual_seed(0)
    save_pretrained(HGRNBitForCausalLM(small_config(num_hidden_layers=1)).eval(), tmp_path / "run")
    r = subprocess_export(tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    synth = json.loads((tmp_path / "out" / man["reports"]["synth"]).read_text())
    assert synth["fmax_mhz"] > 0
    assert synth["utilization"]["TRELLIS_COMB"]["used"] > 1000
    bits = [a for a in man["artifacts"] if a["kind"] == "bitstream"]
    assert len(bits) == 1 and bits[0]["xdma_capable"] is False
    assert (tmp_path / "out" / bits[0]["path"]).stat().st_size > 100_000


def subprocess_export(tmp_path):
    return mmfree("export", str(tmp_path / "run"), "--target", "fpga", "--synth", "ecp5",
                  "-o", str(tmp_path / "out"))
