"""`mmfree bench` on a preset shape (random weights): every engine's prefill and batch-1 decode
tokens/s, peak memory and fraction of the bandwidth bound, recorded side by side.

    python -m bench.engines                              # tiny preset, torch,cpu,onnx (+cuda)
    python -m bench.engines --preset 370m --layers 4 --engines torch,cpu
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from mmfree_cli.benchmark import bench
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.model import HGRNBitForCausalLM, preset, save_pretrained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    ap.add_argument("--engines", default=None, help="default: torch,cpu,onnx (+cuda with a GPU)")
    ap.add_argument("--prefill-tokens", type=int, default=128)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    config = preset(args.preset, **overrides)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / args.preset
        save_pretrained(HGRNBitForCausalLM(config), run)
        if config.vocab_size == ByteTokenizer().vocab_size:
            ByteTokenizer().save(run)
        else:
            raise SystemExit("only byte-vocabulary presets are set up here (tiny); pass --preset tiny")
        report = bench(str(run), args.engines, args.prefill_tokens, args.decode_tokens, args.repeats)
    name = f"engines ({args.preset}, {config.num_hidden_layers} layers x d={config.hidden_size}, random weights)"
    notes = (f"mmfree bench, median of {args.repeats}; load average {report['load_average']:.1f} at the end "
             "(shared machine, other jobs running)")
    for row in report["engines"]:
        if "error" in row:
            print(f"{row['engine']}: {row['error']}")
            continue
        e = row["engine"]
        record(name, f"{e}: prefill tokens/s (T={args.prefill_tokens})", row["prefill_samples"], "tokens/s",
               notes=notes)
        record(name, f"{e}: decode tokens/s (batch 1)", row["decode_samples"], "tokens/s", notes=notes)
        record(name, f"{e}: peak memory growth", row["memory_mib"], "MiB", notes=notes + f"; {row['memory_kind']}")
        record(name, f"{e}: fraction of the bandwidth bound", row["bound_fraction"], "ratio",
               notes=notes + f"; {row['bytes_per_token']} bytes/token at a measured {row['bandwidth_gb_s']:.3g} GB/s")
        print(f"{e}: prefill {row['prefill_tok_s']:.1f} tok/s, decode {row['decode_tok_s']:.1f} tok/s, "
              f"{row['memory_mib']:.1f} MiB, {100 * row['bound_fraction']:.3g}% of the bound")


if __name__ == "__main__":
    main()
