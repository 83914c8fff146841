"""The embedded default end to end: `mmfree train recipes/tiny.yaml` as a user runs it.

Runs the real command in a fresh directory, times it (wall clock, including start-up, data
preparation, validation, checkpoints and the final sample) and records the wall time, the CPU time
of the command (user + system: the recipe trains on one thread, so on an idle machine the wall time
is about this), the final validation loss in nats per byte (the byte tokenizer makes a token a
byte) with the greedy sample the command prints in its notes (line breaks shown as ⏎), and the
training throughput. The load average of the machine is written into the notes, because a loaded
shared machine makes every wall time here pessimistic.

    python -m bench.train_tiny                   # the recipe as shipped
    python -m bench.train_tiny train.max_steps=100 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="dotted recipe overrides")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/results.csv")
    args = ap.parse_args()
    recipe = ROOT / "recipes" / "tiny.yaml"
    with tempfile.TemporaryDirectory() as work:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        # a wide console: rich would otherwise wrap the printed sample at 80 columns
        r = subprocess.run([sys.executable, "-m", "mmfree_cli.cli", "train", str(recipe), *args.overrides],
                           cwd=work, capture_output=True, text=True, env={**os.environ, "COLUMNS": "100000"})
        wall = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = usage.ru_utime + usage.ru_stime
        load_after = os.getloadavg()[0]
        if r.returncode != 0:
            sys.exit(f"training failed:\n{r.stderr[-3000:]}")
        run_dir = (Path(work) / "runs" / "latest").resolve()
        summary = json.loads((run_dir / "summary.json").read_text())
        speeds = [e["tokens_per_s"] for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                  if "tokens_per_s" in e]
    print(r.stdout[-1500:])
    sample = greedy_sample(r.stdout)
    params = summary["parameters"]["total"]
    notes = (f"{params / 1e6:.2f}M parameters, {summary['steps']} steps, {summary['tokens_seen']:,} tokens; "
             f"load average {load_before:.1f} before / {load_after:.1f} after on a shared machine "
             "(other engineers' jobs running), so times are pessimistic")
    if args.overrides:
        notes += "; overrides: " + " ".join(args.overrides)
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s, val loss {summary['val_loss']:.4f} nats/byte, {notes}")
    if args.no_record:
        return
    command = "mmfree train recipes/tiny.yaml" + "".join(f" {o}" for o in args.overrides)
    record("train_tiny", "wall time, whole command", wall, "s", target="<= 300", met=wall <= 300,
           notes=notes, command=command)
    record("train_tiny", "CPU time, whole command", cpu, "s", target="<= 180", met=cpu <= 180,
           notes=notes + "; user+system CPU of the command: the recipe trains on one thread, so this is "
           "an estimate of the wall time on an idle machine", command=command)
    record("train_tiny", "validation loss", summary["val_loss"], "nats/byte", target="<= 1.8",
           met=summary["val_loss"] <= 1.8, command=command,
           notes=notes + f"; {summary['val_bpb']:.3f} bits/byte; greedy sample: " + sample.replace("\n", "⏎"))
    record("train_tiny", "training throughput", speeds, "tokens/s", notes=notes + "; median over logging windows",
           command=command)


def greedy_sample(stdout: str) -> str:
    """The text between the command's "sample (greedy):" line and its "trained →" line."""
    lines = stdout.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("sample (greedy)")), None)
    if start is None:
        return ""
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("trained →")), len(lines))
    return "\n".join(lines[start + 1:end])


if __name__ == "__main__":
    main()
