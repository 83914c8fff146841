"""Decoding cost per token over a long continuation: flat for a recurrent model.

HGRN-Bit carries one [d] vector per layer between tokens and no KV cache, so the 2,000th token
costs what the 10th does. This continues a short prompt for 2,000 tokens (EOS ignored) with the
torch engine through `generate.decode_step` — sampling included, as a user's decode loop runs —
times every step, and records the median step time over the first, middle and last 200 tokens
and the ratio last/first (target ≤ 1.10), plus the state size, which never grows. Both wall time
and the decoding thread's CPU time are recorded: on a shared, loaded machine wall time mostly
measures waiting for a core, while CPU time is the cost of the step itself.

    python -m bench.decode_flat                       # random weights, hidden 256 × 8 layers
    python -m bench.decode_flat --model runs/latest   # a real run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from mmfree_cli.data.tokenizer import ByteTokenizer
from mmfree_cli.engines.torch_engine import TorchEngine
from mmfree_cli.generate import SamplingParams, decode_step, start
from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM
from mmfree_cli.model.frozen import freeze_ternary_weights

WINDOW = 200


def random_engine(hidden: int, layers: int) -> TorchEngine:
    tok = ByteTokenizer()
    config = HGRNBitConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                           bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    torch.manual_seed(0)
    model = HGRNBitForCausalLM(config).eval()
    freeze_ternary_weights(model)  # as TorchEngine.load does
    return TorchEngine.from_model(model, tok)


def step_times(engine: TorchEngine, tokens: int) -> tuple[list[float], list[float]]:
    """(wall, thread CPU) seconds of each decode step of one `tokens`-long continuation
    (temperature 0.8, top-p 0.95)."""
    params = SamplingParams(max_new_tokens=tokens + 1, temperature=0.8, top_p=0.95, ignore_eos=True)
    seq = start(engine, "ROMEO:", params)
    wall, cpu = [], []
    for _ in range(tokens):
        t0, c0 = time.perf_counter(), time.thread_time()
        decode_step(engine, [seq])
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return wall, cpu


def window_medians(times: list[float], tokens: int) -> dict[str, float]:
    """Median ms per step over the first, middle and last WINDOW steps."""
    mid = tokens // 2
    parts = {"first": times[:WINDOW], "middle": times[mid - WINDOW // 2:mid + WINDOW // 2], "last": times[-WINDOW:]}
    return {name: statistics.median(part) * 1e3 for name, part in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a run or model directory (default: random weights)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--notes", default="", help="appended to the recorded notes (e.g. machine load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = TorchEngine.load(Path(args.model)) if args.model else random_engine(args.hidden, args.layers)
    c = engine.config
    shape = f"{args.model or 'random weights'}, d={c.hidden_size}, L={c.num_hidden_layers}, V={c.vocab_size}"
    step_times(engine, 50)  # warm-up
    runs = [step_times(engine, args.tokens) for _ in range(args.repeats)]
    notes = (f"torch engine, CPU float32, {args.threads} thread(s), {shape}; {args.tokens}-token continuation, "
             f"median step over {WINDOW}-token windows, spread over {args.repeats} runs; shared 2-core machine "
             f"under heavy load from other jobs (wall time includes waiting for a core). {args.notes}").strip()
    command = "python -m bench.decode_flat " + " ".join(sys.argv[1:])
    bench = "decode cost per token (torch engine)"
    state = engine.new_state(1)
    for clock, index in (("CPU", 1), ("wall", 0)):
        windows = [window_medians(run[index], args.tokens) for run in runs]
        for name in ("first", "middle", "last"):
            vals = [w[name] for w in windows]
            record(bench, f"{clock} ms/token, tokens {_span(name, args.tokens)}", vals, "ms", notes=notes, command=command)
            print(f"{clock:4s} {name:6s} window: median {statistics.median(vals):.3f} ms/token "
                  f"(runs: {', '.join(f'{v:.3f}' for v in vals)})")
        ratios = [w["last"] / w["first"] for w in windows]
        record(bench, f"{clock} last/first window ratio", ratios, "x", target="<= 1.10",
               met=statistics.median(ratios) <= 1.10, notes=notes, command=command)
        print(f"{clock} last/first ratio: {statistics.median(ratios):.3f}")
    record(bench, "state bytes per sequence (any length)", float(state.numel() * state.element_size()), "bytes",
           notes=notes, command=command)


def _span(name: str, tokens: int) -> str:
    mid = tokens // 2
    return {"first": f"1-{WINDOW}", "middle": f"{mid - WINDOW // 2 + 1}-{mid + WINDOW // 2}",
            "last": f"{tokens - WINDOW + 1}-{tokens}"}[name]


if __name__ == "__main__":
    main()
