"""`mmfree export --target fpga --board vcu118`: the Vivado scripts, the FuseSoC core and the
`--bitstream` check, driven through the real CLI.

No Vivado here: the Tcl is checked as Tcl (tclsh), its data files are evaluated by tclsh and compared
with the manifest, and FuseSoC itself resolves the core's file lists (and, in the slow suite, runs
the Icarus simulation of the golden decode steps).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mmfree_cli.errors import UserError
from mmfree_cli.export.fpga import bitfile, coreclock
from mmfree_cli.export.fpga.boards import BOARDS
from mmfree_cli.model import HGRNBitForCausalLM, save_pretrained
from tests.conftest import perturb, small_config
from tests.helpers import mmfree, one_error_line

TCLSH = shutil.which("tclsh")
FUSESOC = shutil.which("fusesoc", path=str(Path(sys.executable).parent)) or shutil.which("fusesoc")
STATED_MHZ = 90


def tcl(script: str) -> str:
    assert TCLSH, "needs tclsh (apt-get install tcl; scripts/test.sh installs it)"
    r = subprocess.run([TCLSH], input=script, check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = perturb(HGRNBitForCausalLM(small_config(num_hidden_layers=2))).eval()
    path = tmp_path_factory.mktemp("board") / "runs" / "tiny"
    save_pretrained(model, path)
    return path


@pytest.fixture(scope="module")
def bundle(run_dir) -> Path:
    out = run_dir.parent.parent / "bundle"
    r = mmfree("export", str(run_dir), "--target", "fpga", "--board", "vcu118", "--core-mhz", str(STATED_MHZ),
               "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_every_tcl_file_is_complete_tcl(bundle):
    files = sorted((bundle / "vivado").glob("*.tcl"))
    assert {f.name for f in files} == {"build.tcl", "bd.tcl", "settings.tcl", "address_map.tcl"}
    for f in files:
        out = tcl(f"set f [open {{{f}}}]; puts [info complete [read $f]]; close $f")
        assert out.strip() == "1", f.name


def test_address_map_in_block_design_equals_manifest(bundle):
    """address_map.tcl (what bd.tcl assigns) evaluated by tclsh, against manifest.json's maps."""
    out = tcl(f"source {{{bundle / 'vivado' / 'address_map.tcl'}}}\n"
              "foreach {k v} $MMF_REGIONS {puts \"region $k [expr {[lindex $v 0]}] [expr {[lindex $v 1]}]\"}\n"
              "dict for {k v} $MMF_REGISTERS {puts \"reg $k [expr {$v}]\"}\n"
              "puts \"window [expr {$MMF_REG_BASE}] [expr {$MMF_REG_RANGE}]\"\n"
              "puts \"ddr [expr {$MMF_DDR_BASE}] [expr {$MMF_DDR_RANGE}] [expr {$MMF_CARD_END}]\"\n")
    rows = [line.split() for line in out.splitlines()]
    man = manifest(bundle)
    regions = {r[1]: (int(r[2]), int(r[3])) for r in rows if r[0] == "region"}
    assert regions == {k: (v["offset"], v["bytes"]) for k, v in man["card_memory_map"].items() if k != "end"}
    registers = {r[1]: int(r[2]) for r in rows if r[0] == "reg"}
    assert registers == {r["name"]: r["offset"] for r in man["register_map"]["registers"]}
    (window,) = [r for r in rows if r[0] == "window"]
    assert int(window[1]) == 0 and int(window[2]) > max(registers.values())
    (ddr,) = [r for r in rows if r[0] == "ddr"]
    assert int(ddr[1]) == 0 and int(ddr[3]) == man["card_memory_map"]["end"]["offset"] <= int(ddr[2])
    assert int(ddr[2]) == BOARDS["vcu118"].ddr4_bytes == man["board"]["address_map"]["card_memory"]["range"]
    bd = (bundle / "vivado" / "bd.tcl").read_text()
    assert bd.count("assign_bd_address -offset $MMF_DDR_BASE -range $MMF_DDR_RANGE") == 2
    assert bd.count("assign_bd_address -offset $MMF_REG_BASE -range $MMF_REG_RANGE") == 1
    assert "source [file join $mmf_here address_map.tcl]" in bd


def test_core_clock_is_the_stated_value_everywhere(bundle):
    settings = tcl(f"source {{{bundle / 'vivado' / 'settings.tcl'}}}; puts $MMF(core_mhz); puts $MMF(design_id)")
    mhz, did = settings.split()
    man = manifest(bundle)
    assert int(mhz) == STATED_MHZ == man["board"]["core_clock_mhz"] and did == man["design_id"]
    assert "stated with --core-mhz" in man["board"]["core_clock_source"]
    assert "CLKOUT1_REQUESTED_OUT_FREQ $MMF(core_mhz)" in (bundle / "vivado" / "bd.tcl").read_text()
    assert f"USERID 0x{man['design_id'].upper()}" in (bundle / "vivado" / "constraints.xdc").read_text()


def test_core_clock_follows_the_fmax_report(monkeypatch, run_dir, tmp_path):
    """With --synth, the clock is the Fmax report's, rounded down to what the MMCM makes exactly; a
    stated clock above the report is refused. (The report is stubbed: the open flow takes minutes.)"""
    from mmfree_cli.export.fpga import export, synth

    def fake_synth(out_dir, family, params=None):
        (out_dir / "reports").mkdir(exist_ok=True)
        (out_dir / "reports" / "synth.json").write_text(json.dumps(
            {"fmax_mhz": 57.81, "device": "ECP5 test", "speed_grade": 8, "shipped_build": True}))
        return "reports/synth.json", None

    monkeypatch.setattr(synth, "run_synth", fake_synth)
    export(run_dir, tmp_path / "a", synth="ecp5", board="vcu118")
    man = manifest(tmp_path / "a")
    assert man["board"]["core_clock_mhz"] == 57 and man["board"]["fmax_report_mhz"] == 57.81
    assert "set MMF(core_mhz) {57}" in (tmp_path / "a" / "vivado" / "settings.tcl").read_text()
    with pytest.raises(UserError, match="above the core's Fmax report"):
        export(run_dir, tmp_path / "b", synth="ecp5", board="vcu118", core_mhz=60)


def test_mmcm_clock_is_exact_and_never_above_the_limit():
    assert coreclock.reachable_at_most(300, 101.7) == 101
    assert all(coreclock.exact(300, m) for m in (26, 97, 101, 125, 250))
    with pytest.raises(UserError, match="--core-mhz 5"):
        coreclock.choose(BOARDS["vcu118"], None, 5)


def test_board_export_refusals_are_one_line_exit_2(run_dir, tmp_path):
    cases = [(["--board", "vcu118"], "--synth ecp5"),            # no Fmax report and no stated clock
             (["--board", "zcu999", "--core-mhz", "50"], "unknown board"),
             (["--core-mhz", "50"], "--core-mhz needs --board")]
    for extra, words in cases:
        r = mmfree("export", str(run_dir), "--target", "fpga", *extra, "-o", str(tmp_path / "x"))
        one_error_line(r, words)
        assert not (tmp_path / "x").exists()


def test_vivado_wrapper_elaborates_with_the_rtl(bundle, tmp_path):
    """mmf_bd_core.v (generated from mmf_top's port list) compiles with the bundle's RTL."""
    exe = shutil.which("iverilog")
    assert exe, "needs Icarus Verilog (scripts/test.sh installs it)"
    rtl = bundle / "rtl"
    sources = [str(p) for p in sorted(rtl.glob("*.v"))]
    r = subprocess.run([exe, "-g2005", "-o", str(tmp_path / "w.vvp"), "-I", str(rtl), "-s", "mmf_bd_core",
                        str(bundle / "vivado" / "mmf_bd_core.v"), *sources], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_vivado_readme_answers_a_card_owner(bundle):
    text = (bundle / "vivado" / "README.md").read_text()
    for words in ("Not run here", "Vivado 2023.2", "no version has been tried", f"{STATED_MHZ} MHz",
                  "not measured", "program_hw_devices", "configuration flash", "modprobe xdma",
                  "mmfree deploy <this bundle> --device /dev/xdma0", "When timing fails", "--core-mhz",
                  "vivado -mode batch -source vivado/build.tcl"):
        assert words in text, words
    assert "vivado/README.md" in (bundle / "README.md").read_text()


# ---- FuseSoC

def fusesoc_setup(bundle: Path, target: str, build: Path) -> dict:
    assert FUSESOC, "fusesoc not installed (it is in the dev extra)"
    name = yaml.safe_load((bundle / "mmfree_core.core").read_text())["name"]
    r = subprocess.run([FUSESOC, "--cores-root", str(bundle), "run", "--build-root", str(build), "--setup",
                        "--target", target, name], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (eda,) = build.rglob("*.eda.yml")
    return yaml.safe_load(eda.read_text())


def test_fusesoc_core_lists_every_rtl_and_init_file(bundle, tmp_path):
    """FuseSoC resolves the core: the sim target's files are every RTL, include and table file of the
    bundle, the testbench and its data; the board target adds the Vivado scripts."""
    eda = fusesoc_setup(bundle, "sim", tmp_path / "sim")
    listed = {Path(f["name"]).name for f in eda["files"]}
    rtl = {p.name for p in (bundle / "rtl").iterdir()}
    assert rtl == set(manifest(bundle)["rtl"]["files"]) and rtl <= listed
    assert {"tb_mmf_top.v", "regmap.vh", "weights.bin", "golden_in.hex", "golden_logits.hex",
            "golden_state.hex"} <= listed
    assert eda["toplevel"] == "tb_mmf_top"
    params = {k: v["default"] for k, v in eda["parameters"].items()}
    man = manifest(bundle)
    assert params["MEM_BYTES"] == man["card_memory_map"]["end"]["offset"] and params["STEPS"] == man["golden"]["steps"]
    eda = fusesoc_setup(bundle, "vcu118", tmp_path / "board")
    listed = {Path(f["name"]).name for f in eda["files"]}
    assert rtl <= listed and {"bd.tcl", "settings.tcl", "address_map.tcl", "constraints.xdc", "mmf_bd_core.v"} <= listed


@pytest.mark.slow
def test_fusesoc_runs_the_icarus_simulation_target(bundle, tmp_path):
    """`fusesoc run --target sim`: Icarus runs the golden decode steps on the core, bit for bit."""
    assert shutil.which("iverilog"), "needs Icarus Verilog (scripts/test.sh installs it)"
    name = yaml.safe_load((bundle / "mmfree_core.core").read_text())["name"]
    r = subprocess.run([FUSESOC, "--cores-root", str(bundle), "run", "--build-root", str(tmp_path),
                        "--target", "sim", name], check=False, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"PASS: {manifest(bundle)['golden']['steps']} decode steps bit-exact" in r.stdout


# ---- --bitstream

def write_bit(path: Path, design_id: str, part: str = "xcvu9p-flga2104-2L-e", user_id: str | None = None,
              sync: bool = True, payload: int = 4096) -> bytes:
    """A file laid out as Vivado writes a .bit (header fields, then padding, bus-width pattern, sync)."""
    def field(key: str, text: str) -> bytes:
        raw = text.encode() + b"\0"
        return key.encode() + struct.pack(">H", len(raw)) + raw

    data = b"\xff" * 64 + bytes.fromhex("000000bb11220044ffffffffffffffff")
    data += (bytes.fromhex("aa995566") if sync else b"\0\0\0\0") + bytes(range(256)) * (payload // 256)
    design = f"mmf_vcu118_wrapper;UserID=0X{(user_id or design_id).upper()};Version=2023.2"
    raw = (bitfile.PREAMBLE + field("a", design) + field("b", part) + field("c", "2026/12/02")
           + field("d", "12:00:00") + b"e" + struct.pack(">I", len(data)) + data)
    path.write_bytes(raw)
    return raw


def write_sidecar(bit: Path, design_id: str, **extra) -> None:
    side = {"format": "mmfree-bitstream-sidecar", "version": 1, "design_id": design_id, "board": "vcu118",
            "core_clock_mhz": STATED_MHZ, "bytes": bit.stat().st_size, "vivado": "2023.2",
            "wns_ns": 0.12, "whs_ns": 0.01, "timing_met": True, **extra}
    bit.with_name(bit.name + ".json").write_text(json.dumps(side))


def export_with_bit(run_dir: Path, bit: Path, out: Path):
    return mmfree("export", str(run_dir), "--target", "fpga", "--board", "vcu118", "--core-mhz", str(STATED_MHZ),
                  "--bitstream", str(bit), "-o", str(out))


def test_bitstream_with_matching_sidecar_is_recorded(bundle, run_dir, tmp_path):
    did = manifest(bundle)["design_id"]
    bit = tmp_path / "mmf_vcu118.bit"
    write_bit(bit, did)
    write_sidecar(bit, did)
    r = export_with_bit(run_dir, bit, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    man = manifest(tmp_path / "out")
    (entry,) = [a for a in man["artifacts"] if a["kind"] == "bitstream"]
    assert entry["xdma_capable"] and entry["checked"]["user_id"] == did and entry["checked"]["timing_met"]
    assert (tmp_path / "out" / "bitstream" / "mmf_vcu118.bit.json").is_file()


def test_bitstream_refusals_are_one_clear_line(bundle, run_dir, tmp_path):
    did = manifest(bundle)["design_id"]
    random_file = tmp_path / "random.bit"
    random_file.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    truncated = tmp_path / "truncated.bit"
    truncated.write_bytes(write_bit(tmp_path / "whole.bit", did)[:-100])
    write_sidecar(truncated, did)
    other = tmp_path / "other.bit"
    write_bit(other, "0badf00d")
    write_sidecar(other, "0badf00d")
    slower = tmp_path / "slower.bit"
    write_bit(slower, did)
    write_sidecar(slower, did, core_clock_mhz=STATED_MHZ - 10)
    for bit, words in ((random_file, "not a Xilinx bitstream"), (truncated, "truncated"),
                       (other, "this bundle is " + did), (slower, f"pass --core-mhz {STATED_MHZ - 10}")):
        r = export_with_bit(run_dir, bit, tmp_path / "out")
        assert words in one_error_line(r, str(bit))
        assert not (tmp_path / "out").exists()


def test_bitstream_check_catches_each_mismatch(tmp_path):
    did = "1234abcd"
    bit = tmp_path / "a.bit"

    def refused(words):
        with pytest.raises(UserError, match=words):
            bitfile.check(bit, did, "vu9p")

    write_bit(bit, did)
    refused("no sidecar")
    write_sidecar(bit, did)
    assert bitfile.check(bit, did, "vu9p")["user_id"] == did
    with pytest.raises(UserError, match="not this board's ku15p"):   # the part must be the board's
        bitfile.check(bit, did, "ku15p")
    write_bit(bit, did, user_id="99999999")
    write_sidecar(bit, did)
    refused("USERID is 99999999")
    write_bit(bit, did, sync=False)
    write_sidecar(bit, did)
    refused("no sync word")
    write_bit(bit, did)
    write_sidecar(bit, did, timing_met=False)
    refused("timing was not met")
    write_sidecar(bit, did, bytes=12)
    refused("12-byte file")
