"""RTL unit tests of the FPGA core, each a cocotb testbench on Icarus (see tests/fpga/)."""

from __future__ import annotations

import shutil

import pytest

from tests.fpga.runner import TEMPLATES, run_cocotb

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("iverilog") is None,
                                 reason="needs Icarus Verilog (apt-get install iverilog; scripts/test.sh installs it)")]


def test_tmv(tmp_path):
    run_cocotb("mmf_tmv", "tb_tmv", [TEMPLATES / "mmf_tmv.v"], tmp_path,
               parameters={"LANES": 16, "XADDR_W": 4, "SADDR_W": 8}, env={"MMF_LANES": 16})


def test_rowwise(tmp_path):
    from mmfree_cli.export.fpga.memimage import write_tables
    write_tables(tmp_path)
    run_cocotb("mmf_rowwise", "tb_rowwise", [TEMPLATES / "mmf_rowwise.v", TEMPLATES / "mmf_mul.v"], tmp_path / "build",
               parameters={"SIGMOID_HEX": f'"{tmp_path / "sigmoid.hex"}"'})


def test_norm(tmp_path):
    run_cocotb("mmf_norm", "tb_norm", [TEMPLATES / "mmf_norm.v"], tmp_path, includes=[TEMPLATES])


def test_scalar(tmp_path):
    from mmfree_cli.export.fpga.memimage import write_tables
    write_tables(tmp_path)
    run_cocotb("mmf_scalar", "tb_scalar", [TEMPLATES / "mmf_scalar.v"], tmp_path / "build",
               includes=[TEMPLATES], parameters={"RSQRT_HEX": f'"{tmp_path / "rsqrt.hex"}"'})
