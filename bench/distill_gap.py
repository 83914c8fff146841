"""Does distillation help? A ternary student distilled from a stronger full-precision teacher
against the same student trained with CE alone, same steps, same seeds, on the embedded corpus.

    python -m bench.distill_gap                      # the recorded configuration (small: 2 loaded CPU cores)
    python -m bench.distill_gap --steps 40 --teacher-steps 60 --seeds 0   # a quick look

Per seed: one full-precision teacher (wider, trained longer) is trained with `mmfree train`'s
code, then two students start from identical weights and see identical batches: one with CE, one
with `mmfree distill`'s objective. Validation is plain CE on the held-out tail of the corpus for
both, so the gap is in the same unit (nats per byte). Records the validation losses and the gap
(CE-only minus distilled; > 0 means distillation helped) in bench/results.csv and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # `python bench/distill_gap.py` as well as `python -m bench.distill_gap`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import record  # noqa: E402

STUDENT = {"preset": "tiny", "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128}
TEACHER = {"preset": "tiny", "hidden_size": 128, "num_hidden_layers": 3, "intermediate_size": 256, "ternary": False}


def recipe(model: dict, steps: int, lr: float, seed: int, batch: int, seq_len: int, run_name: str, **distill) -> dict:
    return {"model": model, "tokenizer": {"name": "bytes"},
            "data": {"source": "embedded", "seq_len": seq_len, "validation_blocks": 64},
            "optimizer": {"lr": lr}, "schedule": {"warmup_steps": max(steps // 20, 1)},
            "train": {"max_steps": steps, "micro_batch_size": batch, "seed": seed, "sample_prompt": "",
                      "mixed_precision": "no", "run_name": run_name, "threads": 1},
            "checkpoint": {"every_steps": 0}, "eval": {"every_steps": 0},
            "logging": {"every_steps": 10, "tensorboard": False, "plot": False, "progress": False},
            "distill": distill}


def val_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["val_loss"]


def one_seed(work: Path, seed: int, args) -> tuple[float, float, float]:
    from mmfree_cli.train import run as train
    from mmfree_cli.train.distill import run as distill

    def write(name: str, body: dict) -> Path:
        path = work / f"{name}.yaml"
        path.write_text(json.dumps(body))
        return path

    shared = dict(seed=seed, batch=args.batch, seq_len=args.seq_len)
    teacher = train(write("teacher", recipe(TEACHER, args.teacher_steps, 2e-3, run_name=f"teacher-{seed}", **shared)))
    ce = train(write("ce", recipe(STUDENT, args.steps, 4e-3, run_name=f"ce-{seed}", **shared)))
    kd = distill(write("kd", recipe(STUDENT, args.steps, 4e-3, run_name=f"kd-{seed}", teacher=str(teacher),
                                    alpha=args.alpha, temperature=args.temperature, **shared)))
    return val_loss(teacher), val_loss(ce), val_loss(kd)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="student optimizer steps")
    p.add_argument("--teacher-steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            work = Path(tmp) / f"seed{seed}"
            work.mkdir()
            os.chdir(work)  # runs/ lands in the temporary directory
            results.append(one_seed(work, seed, args))
            print(f"seed {seed}: teacher {results[-1][0]:.4f}  CE-only {results[-1][1]:.4f}  "
                  f"distilled {results[-1][2]:.4f}", flush=True)
    if args.no_record:
        return
    config = (f"student ternary d{STUDENT['hidden_size']}x{STUDENT['num_hidden_layers']}, teacher fp "
              f"d{TEACHER['hidden_size']}x{TEACHER['num_hidden_layers']} ({args.teacher_steps} steps); "
              f"{args.steps} student steps of {args.batch}x{args.seq_len} bytes; alpha {args.alpha}, T {args.temperature}; "
              f"seeds {' '.join(map(str, args.seeds))}; validation = plain CE on 64 held-out blocks; shared 2-core machine")
    gaps = [ce - kd for _, ce, kd in results]
    command = " ".join(["python -m bench.distill_gap", *sys.argv[1:]])
    record("distill_gap", "teacher val_loss", [t for t, _, _ in results], "nats/byte", notes=config, command=command)
    record("distill_gap", "student val_loss, CE only", [ce for _, ce, _ in results], "nats/byte", notes=config, command=command)
    record("distill_gap", "student val_loss, distilled", [kd for _, _, kd in results], "nats/byte", notes=config, command=command)
    record("distill_gap", "gap (CE only - distilled)", gaps, "nats/byte", target="> 0 for every seed",
           met=all(g > 0 for g in gaps), notes=config, command=command)


if __name__ == "__main__":
    main()
