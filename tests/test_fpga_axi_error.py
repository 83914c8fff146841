"""AXI error responses: the RTL ends the run with STATUS.ERROR | MEM_ERROR (cocotb, slow), and the
host turns that status into one clear line (fast, a scripted register file)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mmfree_cli.deploy.card import Card
from mmfree_cli.errors import UserError
from mmfree_cli.hardware import regmap
from tests.test_fpga_export import bundle  # noqa: F401  (the module-scoped exported bundle)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog (scripts/test.sh installs it)")
def test_rtl_error_responses_set_status_error(bundle, tmp_path):  # noqa: F811
    from mmfree_cli.export.fpga.rtl import verilog_sources
    from tests.fpga.runner import run_cocotb
    rtl = tmp_path / "rtl"
    shutil.copytree(bundle / "rtl", rtl)
    run_cocotb("mmf_top", "tb_axi_error", verilog_sources(rtl), tmp_path / "build", includes=[rtl],
               test_dir=rtl, env={"MMF_BUNDLE": bundle})


class ScriptedXdma:
    """Registers of a card whose run ended with an AXI error response; DMA reads return zeros."""
    prefix = "/dev/xdma0"

    def __init__(self):
        self.regs = {regmap.REGISTERS["STATUS"]: regmap.STATUS_DONE | regmap.STATUS_ERROR |
                     regmap.STATUS_MEM_ERROR, regmap.REGISTERS["ERROR_PC"]: 0x40}

    def read32(self, off):
        return self.regs.get(off, 0)

    def write32(self, off, value):
        pass

    def dma_write(self, addr, data):
        pass

    def dma_read(self, addr, n):
        return bytes(n)


def test_host_reports_a_memory_error_in_one_line():
    man = {"card_memory_map": {"state": {"offset": 0}},
           "registers_to_write": {"WEIGHTS": 0, "PROG": 0, "IN": 0, "OUT": 0, "STATE": 0},
           "model": {"dims": {"d": 4, "vocab": 8, "layers": 1}}}
    card = Card(ScriptedXdma(), man, timeout=1.0, wait="poll")
    with pytest.raises(UserError) as e:
        card.step(np.zeros(4, np.int32))
    msg = str(e.value)
    assert "\n" not in msg and "AXI error response" in msg and "0x40" in msg
