"""Drift of the integer-only engine from the float model (`mmfree eval --compare`), recorded.

    python -m bench.int_fidelity runs/latest            # a run of recipes/tiny.yaml
    python -m bench.int_fidelity DIR --max-tokens 20000 --note "what the model is"

Targets (issue 6): perplexity within 2% of the float model's, top-1 agreement >= 97%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import record
from mmfree_cli.fidelity import compare

BENCH = "int_fidelity (cpu integer engine vs float model, held-out text)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="runs/latest")
    ap.add_argument("--data", default=None, help="held-out text (default: tail of the embedded corpus)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--note", default="", help="what the model is (recorded in the notes)")
    args = ap.parse_args()
    r = compare(Path(args.model).resolve(), "cpu", args.data, args.context, args.max_tokens)
    notes = f"{args.note}; {r['tokens']} tokens, windows of {r['context']}".lstrip("; ")
    record(BENCH, "perplexity, float model", r["ppl_float"], "ppl", notes=notes)
    record(BENCH, "perplexity, integer engine", r["ppl_engine"], "ppl", notes=notes)
    record(BENCH, "perplexity delta (integer / float - 1)", r["ppl_delta"], "ratio", target="<= 0.02",
           met=abs(r["ppl_delta"]) <= 0.02, notes=notes)
    record(BENCH, "top-1 agreement", r["top1_agreement"], "share", target=">= 0.97",
           met=r["top1_agreement"] >= 0.97, notes=notes)
    print(r)


if __name__ == "__main__":
    main()
