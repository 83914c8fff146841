"""The emulated card backed by the RTL itself: `mmfree deploy` and 8 decode steps of the fpga engine
run against mmf_top simulated in Icarus (tests/deploy_rtl_bridge.py), behind the same FUSE nodes."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from conftest import small_config
from test_deploy import FUSE_MISSING, emulated_card, make_bundle, make_run, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("iverilog") is None or FUSE_MISSING is not None,
                                 reason="needs Icarus Verilog and FUSE (scripts/test.sh installs both)")]


def start_simulation(bundle, work, socket_path) -> tuple[threading.Thread, list]:
    """Build the bundle's RTL and run the bridge testbench on a thread; returns (thread, errors)."""
    import json

    from mmfree_cli.export.fpga.rtl import verilog_sources
    from tests.fpga.runner import run_cocotb
    manifest = json.loads((bundle / "manifest.json").read_text())
    rtl = work / "rtl"
    shutil.copytree(bundle / "rtl", rtl)
    memory = -(-manifest["card_memory_map"]["end"]["offset"] // (1 << 20)) * (1 << 20)
    errors: list = []

    def simulate():
        try:
            run_cocotb("mmf_top", "deploy_rtl_bridge", verilog_sources(rtl), work / "build", includes=[rtl],
                       test_dir=rtl, env={"MMF_CARD_SOCKET": socket_path, "MMF_CARD_MEMORY": memory,
                                          "MMF_MEM_W": manifest["rtl"]["parameters"]["MEM_W"]})
        except BaseException as e:  # reported by the test after the emulator is gone
            errors.append(e)
    thread = threading.Thread(target=simulate, daemon=True)
    thread.start()
    return thread, errors


def test_deploy_and_decode_on_the_rtl_behind_the_emulated_device(tmp_path):
    from mmfree_cli.engines import load_engine
    run = make_run(tmp_path / "run", small_config(vocab_size=260, num_hidden_layers=2))
    bundle = make_bundle(run, tmp_path / "bundle")
    socket_path = str(tmp_path / "card.sock")
    sim, errors = start_simulation(bundle, tmp_path, socket_path)
    tokens = [256, 72, 101, 108, 108, 111, 44, 32]
    with emulated_card(tmp_path / "mnt", None, "--connect", socket_path, ready_timeout=180) as device:
        deployed = run_cli("deploy", str(bundle), "--device", str(device), "--timeout", "600",
                           timeout=3600)
        assert deployed.returncode == 0, deployed.stderr
        assert "self-test 16 golden decode steps bit-exact (logits and final state)" in deployed.stdout
        fpga = load_engine("fpga", bundle, device=str(device), timeout=600)
        try:
            cpu = load_engine("cpu", run)
            state, ref_state = fpga.new_state(1), cpu.new_state(1)
            for t in tokens:   # 8 decode steps, logits bit for bit
                got, state = fpga.step_int([t], state)
                want, ref_state = cpu.prefill_int(torch.tensor([[t]]), ref_state)
                np.testing.assert_array_equal(got, want[:, 0])
            np.testing.assert_array_equal(state, ref_state)
        finally:
            fpga.close()
    sim.join(120)
    assert not sim.is_alive() and not errors, errors
