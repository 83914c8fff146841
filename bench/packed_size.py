"""Packed size of a 370M-shape model (random weights) in every layout, against bf16 and theory.

Writes the model's bf16 checkpoint (what `mmfree train` / the reference release ship), runs
`mmfree quantize` on it once per layout, and records for each: the file's size against the layout's
theoretical size (target ≤ 1.10×), how much smaller the whole packed file is than the measured bf16
checkpoint file (issue 5 target ≥ 7×), the same ratio for the ternary weights alone, and bits per
ternary weight. Sizes do not depend on machine load; the quantize wall time, also recorded, does.

    python -m bench.packed_size            # or: python bench/packed_size.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.record` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained
from mmfree_cli.quant.packed import WEIGHTS
from mmfree_cli.quant.quantize import quantize
from mmfree_cli.quant.report import BF16_BYTES

BENCH = "packed_size_370m"
LAYOUTS = ("i2", "tq1", "hf-bitnet")
NOTES = "370M shape (24 x 1024, vocab 32000), random init, floats bf16; shared 2-core machine"


def write_bf16_checkpoint(directory: Path) -> int:
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(preset("370m"))  # random init, as training starts
    save_pretrained(model, directory, dtype=torch.bfloat16)
    return (directory / WEIGHTS).stat().st_size


def measure(layout: str, source: Path, bf16_file: int, work: Path) -> None:
    start = time.perf_counter()
    out, r = quantize(source, work / f"packed-{layout}", layout)
    seconds = time.perf_counter() - start
    file_bytes = (out / WEIGHTS).stat().st_size
    ternary = r["groups"]["ternary weights"]
    whole = bf16_file / file_bytes
    alone = ternary["params"] * BF16_BYTES / ternary["bytes"]
    tag = f"[{layout}]"
    record(BENCH, f"packed file MB {tag}", file_bytes / 1e6, "MB", notes=NOTES)
    record(BENCH, f"size vs theoretical {tag}", file_bytes / r["theoretical_bytes"], "x", "<= 1.10",
           file_bytes / r["theoretical_bytes"] <= 1.10, notes=f"theoretical {r['theoretical_bytes']} B; {NOTES}")
    record(BENCH, f"bf16 checkpoint / packed file {tag}", whole, "x", ">= 7", whole >= 7,
           notes=f"bf16 file {bf16_file} B; bf16 embeddings ({r['groups']['embeddings']['bytes']} B) "
                 f"bound this ratio; {NOTES}")
    record(BENCH, f"bf16 / packed, ternary weights only {tag}", alone, "x", ">= 7", alone >= 7, notes=NOTES)
    record(BENCH, f"bits per ternary weight {tag}", r["bits_per_ternary_weight"], "bits", notes=NOTES)
    record(BENCH, f"quantize wall time {tag}", seconds, "s", notes=f"one run; {NOTES}")
    print(f"{layout}: {file_bytes} B, {file_bytes / r['theoretical_bytes']:.4f}x theoretical, "
          f"{whole:.3f}x smaller than bf16 ({alone:.3f}x for ternary weights), {seconds:.1f} s")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mmfree-bench-") as tmp:
        work = Path(tmp)
        bf16_file = write_bf16_checkpoint(work / "bf16")
        record(BENCH, "bf16 checkpoint MB", bf16_file / 1e6, "MB", notes=NOTES)
        print(f"bf16 checkpoint: {bf16_file} B")
        for layout in LAYOUTS:
            measure(layout, work / "bf16", bf16_file, work)


if __name__ == "__main__":
    main()
