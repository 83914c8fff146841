"""`mmfree export --target fpga`: compile a model for the mmfree core and write its bundle.

    model dir → ternary model (formats.ternary) → integer model (quant.intmodel) → program + weight image (compiler) → bundle (bundle):
    manifest.json, weights.bin, embed.safetensors, rtl/ (rtl), golden/, reports/ (estimates,
    synth), bitstream/ (synth --synth, or a vendor file checked by bitfile and recorded with
    --bitstream), mmfree_core.core and sim/ (fusesoc), vivado/ (vivado, for --board).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...data.tokenizer import copy_tokenizer_files
from ...errors import UserError
from ...fileio import write_json
from ...formats.fpga import write_bundle_manifest
from ...formats.ternary import open_ternary
from ...model import HGRNBitConfig
from ...quant.intmodel import int_model
from . import bitfile, bundle, coreclock, estimates, fusesoc, vivado
from .boards import board as find_board
from .compiler import compile_model, dims_of, fit_core
from .rtl import design_id, generate

SYNTH_FAMILIES = ("ecp5", "ice40")
GOLDEN_STEPS = 16


def export(model_dir: Path, out_dir: Path, synth: str | None = None, bitstream: Path | None = None,
           lanes: int | None = None, steps: int = GOLDEN_STEPS, board: str | None = None,
           core_mhz: float | None = None) -> None:
    """Fill out_dir with the FPGA bundle of the model in model_dir."""
    if synth is not None and synth not in SYNTH_FAMILIES:
        raise UserError(f"--synth {synth}: choose one of {', '.join(SYNTH_FAMILIES)}")
    if bitstream is not None and not Path(bitstream).is_file():
        raise UserError(f"--bitstream {bitstream}: file not found — give the vendor-built bitstream file")
    if core_mhz is not None and board is None:
        raise UserError("--core-mhz needs --board: it sets the clock of a board build (e.g. --board vcu118)")
    target_board = find_board(board) if board is not None else None
    if target_board is not None and synth is None:
        coreclock.choose(target_board, None, core_mhz)   # refuse now, before minutes of work
    ternary = open_ternary(Path(model_dir))
    model, config = int_model(ternary), HGRNBitConfig.from_dict(ternary.config).to_dict()
    params = fit_core(dims_of(model), lanes)
    if bitstream is not None:   # before the compile: a wrong file is refused at once
        checked = bitfile.check(Path(bitstream), design_id(params),
                                target_board.device if target_board is not None else None)
    compiled = compile_model(model, params)
    bundle.write_weights(out_dir, compiled, model)
    rtl_info = generate(out_dir / "rtl", params)
    golden = bundle.write_golden(out_dir, model, steps, int(config.get("bos_token_id") or 0))
    reports: dict = {}
    artifacts = [bundle.artifact(out_dir, "weights.bin", "weights", "mmfree export (compiler)"),
                 bundle.artifact(out_dir, "embed.safetensors", "embedding", "mmfree export"),
                 bundle.artifact(out_dir, "rtl/mmf_top.v", "rtl", "generated from templates/fpga", False),
                 bundle.artifact(out_dir, "golden/vectors.safetensors", "golden", "quant.intref")]
    if synth is not None:
        from .synth import run_synth
        reports["synth"], bits = run_synth(out_dir, synth, params)
        if bits is not None:
            artifacts.append(bundle.artifact(out_dir, bits, "bitstream",
                                             f"open flow (yowasp) for {synth}: core datapath only, "
                                             "no XDMA", xdma_capable=False))
    # estimates after synthesis, so they can use the Fmax it measured for this very build
    fmax = None
    if "synth" in reports:
        synth_report = json.loads((out_dir / reports["synth"]).read_text())
        fmax = synth_report["fmax_mhz"] if synth_report.get("shipped_build") else None
    reports["estimates"] = estimates.write_report(out_dir / "reports", compiled, params, fmax)
    board_info = None
    if target_board is not None:
        board_info = board_build(out_dir, target_board, core_mhz, bundle.card_layout(compiled), rtl_info)
        artifacts += [bundle.artifact(out_dir, rel, "vivado", f"generated for --board {target_board.name}; "
                                      "never run here (no Vivado)") for rel in vivado.vivado_files(out_dir)]
    if bitstream is not None:
        if board_info is not None and checked["core_clock_mhz"] != board_info["core_clock_mhz"]:
            raise UserError(f"--bitstream {bitstream}: built with a core clock of {checked['core_clock_mhz']} MHz, "
                            f"this export's is {board_info['core_clock_mhz']} MHz — pass "
                            f"--core-mhz {checked['core_clock_mhz']} so the bundle describes the card")
        artifacts += record_bitstream(out_dir, Path(bitstream), checked)
    man = bundle.manifest(compiled, params, rtl_info, config, bundle.model_hash(Path(model_dir)),
                          golden, artifacts, reports)
    if board_info is not None:
        man["board"] = board_info
    sim_files = fusesoc.write_sim(out_dir, golden["path"])
    core = fusesoc.write_core(out_dir, man, sim_files, board_info)
    man["artifacts"] += [bundle.artifact(out_dir, rel, "fusesoc", "mmfree export (fusesoc.py)")
                         for rel in (core, *sim_files)]
    write_json(out_dir / "config.json", config)
    copy_tokenizer_files(model_dir, out_dir)  # the bundle chats on its own (--engine fpga)
    bundle.write_readme(out_dir, man, Path(model_dir).name)
    write_bundle_manifest(out_dir, man)


def board_build(out_dir: Path, target_board, core_mhz: float | None, layout: dict, rtl_info: dict) -> dict:
    """vivado/ for the board, clocked from the bundle's Fmax report (or the stated --core-mhz)."""
    clock = coreclock.choose(target_board, coreclock.read_report(out_dir / "reports" / "synth.json"), core_mhz)
    return vivado.write(out_dir, target_board, clock, layout, rtl_info["design_id"], rtl_info["files"])


def record_bitstream(out_dir: Path, bit: Path, checked: dict) -> list[dict]:
    """Copy a checked vendor bitstream and its sidecar into bitstream/; their manifest entries."""
    dest = out_dir / "bitstream" / bit.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bit, dest)
    side = bit.with_name(bit.name + vivado.SIDECAR_SUFFIX)
    shutil.copyfile(side, dest.with_name(side.name))
    entry = bundle.artifact(out_dir, f"bitstream/{dest.name}", "bitstream",
                            f"vendor-built (Vivado {checked['vivado'] or '?'}), supplied with --bitstream; checked: "
                            ".bit header, sync word, part, USERID and sidecar design ID", xdma_capable=True)
    entry["checked"] = checked
    return [entry, bundle.artifact(out_dir, f"bitstream/{side.name}", "bitstream-sidecar",
                                   "written by vivado/build.tcl beside the bitstream")]
