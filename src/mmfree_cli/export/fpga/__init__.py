"""`mmfree export --target fpga`: compile a model for the mmfree core and write its bundle.

    model dir → ternary model (formats.ternary) → integer model (quant.intmodel) → program + weight image (compiler) → bundle (bundle):
    manifest.json, weights.bin, embed.safetensors, rtl/ (rtl), golden/, reports/ (estimates,
    synth), bitstream/ (synth --synth, or a vendor file recorded with --bitstream).
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
from . import bundle, estimates
from .compiler import compile_model, dims_of, fit_core
from .rtl import generate

SYNTH_FAMILIES = ("ecp5", "ice40")
GOLDEN_STEPS = 16


def export(model_dir: Path, out_dir: Path, synth: str | None = None, bitstream: Path | None = None,
           lanes: int | None = None, steps: int = GOLDEN_STEPS) -> None:
    """Fill out_dir with the FPGA bundle of the model in model_dir."""
    if synth is not None and synth not in SYNTH_FAMILIES:
        raise UserError(f"--synth {synth}: choose one of {', '.join(SYNTH_FAMILIES)}")
    if bitstream is not None and not Path(bitstream).is_file():
        raise UserError(f"--bitstream {bitstream}: file not found — give the vendor-built bitstream file")
    ternary = open_ternary(Path(model_dir))
    model, config = int_model(ternary), HGRNBitConfig.from_dict(ternary.config).to_dict()
    params = fit_core(dims_of(model), lanes)
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
    if bitstream is not None:
        dest = out_dir / "bitstream" / Path(bitstream).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bitstream, dest)
        artifacts.append(bundle.artifact(out_dir, f"bitstream/{dest.name}", "bitstream",
                                         "vendor-built, supplied with --bitstream (not verified here)",
                                         xdma_capable=True))
    man = bundle.manifest(compiled, params, rtl_info, config, bundle.model_hash(Path(model_dir)),
                          golden, artifacts, reports)
    write_json(out_dir / "config.json", config)
    copy_tokenizer_files(model_dir, out_dir)  # the bundle chats on its own (--engine fpga)
    bundle.write_readme(out_dir, man, Path(model_dir).name)
    write_bundle_manifest(out_dir, man)
