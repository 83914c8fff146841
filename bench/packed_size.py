"""Packed size of a 370M-shape model (random weights) in every layout, and what an int8 embedding costs.

Sizes: writes the model's bf16 checkpoint (what `mmfree train` / the reference release ship), runs
`mmfree quantize` on it once per configuration (each layout with bf16 floats, then tq1 and i2 with
`--embedding-dtype int8`), and records for each: the file's size against the layout's theoretical
size (target ≤ 1.10×), how much smaller the whole packed file is than the measured bf16 checkpoint
file (issue 5 target ≥ 7×), the same ratio for the ternary weights alone, and bits per ternary
weight. Sizes do not depend on machine load; the quantize wall time, also recorded, does.

Accuracy (`--run DIR`, a trained run, e.g. from `mmfree train recipes/tiny.yaml`): packs it with
bf16 floats and with an int8 embedding (tq1 both), runs both on held-out text (the tail of the
embedded corpus that the tiny recipe never trains on) and records the max-abs logit difference,
top-1 agreement and both perplexities. Why int8 and not fp8 for the same size: the embedding's
relative RMS rounding error under per-row int8 and per-row-scaled fp8 e4m3 (simulated: fp8 is not
a stored format), on the 370M table and on the run's.

    python -m bench.packed_size                        # sizes (or: python bench/packed_size.py)
    python -m bench.packed_size --run runs/latest      # also the accuracy figures
    python -m bench.packed_size --run runs/latest --no-sizes
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.record` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from bench.record import record
from mmfree_cli.export.packed import quantize
from mmfree_cli.export.packed_report import BF16_BYTES
from mmfree_cli.fileio import load_safetensors
from mmfree_cli.formats.packed import WEIGHTS
from mmfree_cli.formats.ternary import open_model
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained
from mmfree_cli.quant.rowint8 import dequantize_rows, quantize_rows

BENCH = "packed_size_370m"
CONFIGS = (("i2", None), ("tq1", None), ("hf-bitnet", None), ("tq1", "int8"), ("i2", "int8"))
"""(layout, --embedding-dtype); None: the default, the float dtype (bf16)."""
NOTES = "370M shape (24 x 1024, vocab 32000), random init, floats bf16; shared 2-core machine"
ACCURACY = "packed_int8_embedding"
EMBEDDING = "model.embeddings.weight"
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def write_bf16_checkpoint(directory: Path) -> int:
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(preset("370m"))  # random init, as training starts
    save_pretrained(model, directory, dtype=torch.bfloat16)
    return (directory / WEIGHTS).stat().st_size


def fp8_rows(w: torch.Tensor) -> torch.Tensor:
    """Table `w` rounded through float8_e4m3fn with a float32 scale a row (row absmax → 448)."""
    scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp_min(torch.finfo(torch.float32).tiny)
    return (w / scale).to(torch.float8_e4m3fn).float() * scale


def row_errors(w: torch.Tensor) -> tuple[float, float]:
    """Relative RMS error of table `w` stored as per-row int8 and as per-row-scaled fp8 e4m3."""
    int8, fp8 = dequantize_rows(*quantize_rows(w)), fp8_rows(w)
    rms = w.pow(2).mean().sqrt()
    return ((int8 - w).pow(2).mean().sqrt() / rms).item(), ((fp8 - w).pow(2).mean().sqrt() / rms).item()


def tag_of(layout: str, embedding_dtype: str | None) -> str:
    return f"[{layout}, {embedding_dtype} embedding]" if embedding_dtype else f"[{layout}]"


def measure(layout: str, embedding_dtype: str | None, source: Path, bf16_file: int, work: Path) -> None:
    start = time.perf_counter()
    out, r = quantize(source, work / f"packed-{layout}-{embedding_dtype}", layout, embedding_dtype=embedding_dtype)
    seconds = time.perf_counter() - start
    file_bytes = (out / WEIGHTS).stat().st_size
    ternary = r["groups"]["ternary weights"]
    whole = bf16_file / file_bytes
    alone = ternary["params"] * BF16_BYTES / ternary["bytes"]
    tag = tag_of(layout, embedding_dtype)
    notes = NOTES.replace("floats bf16", f"floats bf16, embedding {embedding_dtype} (per-row scale)"
                          if embedding_dtype else "floats bf16")
    emb = r["groups"]["embeddings"]["bytes"]
    record(BENCH, f"packed file MB {tag}", file_bytes / 1e6, "MB", notes=notes)
    record(BENCH, f"size vs theoretical {tag}", file_bytes / r["theoretical_bytes"], "x", "<= 1.10",
           file_bytes / r["theoretical_bytes"] <= 1.10, notes=f"theoretical {r['theoretical_bytes']} B; {notes}")
    record(BENCH, f"bf16 checkpoint / packed file {tag}", whole, "x", ">= 7", whole >= 7,
           notes=f"bf16 file {bf16_file} B; embeddings {emb} B of it; {notes}")
    record(BENCH, f"bf16 / packed, ternary weights only {tag}", alone, "x", ">= 7", alone >= 7, notes=notes)
    record(BENCH, f"bits per ternary weight {tag}", r["bits_per_ternary_weight"], "bits", notes=notes)
    record(BENCH, f"quantize wall time {tag}", seconds, "s", notes=f"one run; {notes}")
    print(f"{tag}: {file_bytes} B, {file_bytes / r['theoretical_bytes']:.4f}x theoretical, "
          f"{whole:.3f}x smaller than bf16 ({alone:.3f}x for ternary weights), {seconds:.1f} s")


def sizes() -> None:
    with tempfile.TemporaryDirectory(prefix="mmfree-bench-") as tmp:
        work = Path(tmp)
        bf16_file = write_bf16_checkpoint(work / "bf16")
        record(BENCH, "bf16 checkpoint MB", bf16_file / 1e6, "MB", notes=NOTES)
        print(f"bf16 checkpoint: {bf16_file} B")
        int8, fp8 = row_errors(load_safetensors(work / "bf16" / WEIGHTS)[0][EMBEDDING].float())
        record(BENCH, "embedding relative RMS error, per-row int8", int8, "", notes=NOTES)
        record(BENCH, "embedding relative RMS error, per-row fp8 e4m3 (simulated)", fp8, "", notes=NOTES)
        print(f"embedding relative RMS error: int8 {int8:.5f}, fp8 e4m3 {fp8:.5f}")
        for layout, embedding_dtype in CONFIGS:
            measure(layout, embedding_dtype, work / "bf16", bf16_file, work)


def held_out_windows(run: Path, context: int = 128, max_tokens: int = 16384) -> torch.Tensor:
    """[n, context] token windows of the held-out tail of the embedded corpus."""
    from mmfree_cli.data.tokenizer import load_tokenizer
    from mmfree_cli.fidelity import held_out_text
    ids = load_tokenizer(run).encode(held_out_text(None))[: max_tokens]
    n = len(ids) // context
    return torch.tensor(ids[: n * context]).reshape(n, context)


def compare(a, b, windows: torch.Tensor) -> dict:
    """Max-abs logit difference, top-1 agreement and both perplexities of models a and b."""
    diff, agree, nll_a, nll_b, count = 0.0, 0, 0.0, 0.0, 0
    with torch.no_grad():
        for batch in windows.split(16):
            la, lb = a(batch).logits.float(), b(batch).logits.float()
            diff = max(diff, (la - lb).abs().max().item())
            agree += (la.argmax(-1) == lb.argmax(-1)).sum().item()
            target = batch[:, 1:].reshape(-1)
            nll_a += F.cross_entropy(la[:, :-1].reshape(-1, la.shape[-1]), target, reduction="sum").item()
            nll_b += F.cross_entropy(lb[:, :-1].reshape(-1, lb.shape[-1]), target, reduction="sum").item()
            count += target.numel()
    return {"max_abs": diff, "top1": agree / windows.numel(), "ppl_a": math.exp(nll_a / count),
            "ppl_b": math.exp(nll_b / count), "positions": windows.numel()}


def accuracy(run: Path) -> None:
    run = run.resolve()
    with tempfile.TemporaryDirectory(prefix="mmfree-bench-") as tmp:
        default = open_model(quantize(run, Path(tmp) / "bf16", "tq1")[0])
        int8 = open_model(quantize(run, Path(tmp) / "int8", "tq1", embedding_dtype="int8")[0])
        windows = held_out_windows(run)
        c = compare(default, int8, windows)
        notes = (f"{run.name}: trained `mmfree train recipes/tiny.yaml`; tq1, floats bf16, embedding bf16 vs "
                 f"int8 per-row; {c['positions']} held-out positions (embedded corpus tail, windows of "
                 f"{windows.shape[1]}), float32 logits; shared 2-core machine")
        record(ACCURACY, "max abs logit difference, int8 vs bf16 embedding", c["max_abs"], "", notes=notes)
        record(ACCURACY, "top-1 agreement, int8 vs bf16 embedding", 100 * c["top1"], "%", notes=notes)
        record(ACCURACY, "held-out perplexity, bf16 embedding", c["ppl_a"], "", notes=notes)
        record(ACCURACY, "held-out perplexity, int8 embedding", c["ppl_b"], "", notes=notes)
        source = load_safetensors(run / WEIGHTS)[0][EMBEDDING].float()
        int8_err, fp8_err = row_errors(source)
        with torch.no_grad():  # the same int8 model with the fp8-rounded table instead
            int8.model.embeddings.weight.copy_(fp8_rows(source))
        f = compare(default, int8, windows)
        record(ACCURACY, "max abs logit difference, fp8 e4m3 (simulated) vs bf16 embedding", f["max_abs"], "",
               notes=notes)
        record(ACCURACY, "top-1 agreement, fp8 e4m3 (simulated) vs bf16 embedding", 100 * f["top1"], "%",
               notes=notes)
        record(ACCURACY, "embedding relative RMS error, per-row int8", int8_err, "", notes=notes)
        record(ACCURACY, "embedding relative RMS error, per-row fp8 e4m3 (simulated)", fp8_err, "", notes=notes)
        print(f"{run.name}: max |Δlogit| {c['max_abs']:.4g}, top-1 agreement {100 * c['top1']:.2f}% "
              f"over {c['positions']} positions, perplexity {c['ppl_a']:.4f} (bf16) vs {c['ppl_b']:.4f} (int8); "
              f"embedding rel. RMS error int8 {int8_err:.5f}, fp8 e4m3 {fp8_err:.5f}; simulated fp8: "
              f"max |Δlogit| {f['max_abs']:.4g}, top-1 agreement {100 * f['top1']:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run: also measure the int8 embedding's accuracy cost")
    parser.add_argument("--no-sizes", action="store_true", help="skip the 370M size figures")
    args = parser.parse_args()
    if not args.no_sizes:
        sizes()
    if args.run:
        accuracy(args.run)


if __name__ == "__main__":
    main()
