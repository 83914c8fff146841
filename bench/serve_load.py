"""What `mmfree serve --engine cuda` delivers to many streaming clients at once, on loopback.

A server process runs the app of `mmfree serve` (`serve.create_app`, the continuous-batching
scheduler of serve_batch.py) over the cuda engine with random ternary weights of a preset shape and
a tokenizer that writes token i as the text "i " (no end-of-sequence token: every request runs to
max_tokens). Client processes then open N concurrent streaming /v1/completions requests (greedy,
temperature 0), bounded in count and time, and time every token's arrival.

Records: aggregate tokens/s (all completion tokens over the span from the first request sent to the
last stream ended) and its ratio to the bare batched step (`BatchedDecoder.step` at batch N, measured
in this script before the server starts); time to first token p50/p99; inter-token latency p50/p99
(gaps between a stream's consecutive tokens; tokens that arrive in one write count a gap of 0); and
how many clients' texts equal their prompt's solo text (the same prompt sent alone to the same
server before the load). Prompts: `--distinct` different ones of 8 tokens, client i sends prompt
i mod distinct.

    python bench/serve_load.py [--preset 1.3b] [--clients 256] [--tokens 256] [--max-batch 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL_ID = "bench"


class NumberTokenizer:
    """Token i ↔ the text "i " (so any id decodes, and texts compare token for token)."""

    bos_id = eos_id = pad_id = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return [int(w) for w in text.split()]

    def decode(self, ids: list[int]) -> str:
        return "".join(f"{i} " for i in ids)

    def token_bytes(self, token_id: int) -> bytes:
        return f"{token_id} ".encode()


def _engine(preset_name: str, device: str):
    from bench.gpu_decode import random_tensors
    from mmfree_cli.engines.cuda import CudaEngine
    from mmfree_cli.model import preset
    config = preset(preset_name)
    return CudaEngine(config, random_tensors(config, device), NumberTokenizer(config.vocab_size), device=device)


def serve(preset_name: str, port: int, max_batch: int, device: str) -> None:
    """The server process: the app `mmfree serve` builds, on 127.0.0.1:port."""
    import uvicorn

    from mmfree_cli.chat import builtin_template
    from mmfree_cli.serve import Limits, create_app
    app = create_app(_engine(preset_name, device), MODEL_ID, builtin_template("dialogue"), Limits(max_tokens=4096),
                     max_batch)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def bare_step_rate(preset_name: str, batch: int, device: str, steps: int = 50) -> list[float]:
    """tokens/s of the batched step alone at `batch` (bench/gpu_decode.batched_rates), three runs."""
    import torch

    from bench.gpu_decode import batched_rates
    engine = _engine(preset_name, device)
    rates = batched_rates(engine, batch, steps, repeats=3)
    del engine
    if device == "cuda":
        torch.cuda.empty_cache()
    return rates


# ---- clients ------------------------------------------------------------------------------------
async def stream(port: int, prompt: str, tokens: int, timeout: float) -> dict:
    """One streaming completion over a raw HTTP/1.1 connection → send time, token arrival times, text."""
    body = json.dumps({"model": MODEL_ID, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "stream": True}).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    times, parts, status = [], [], None
    deadline = t0 + timeout
    try:
        while True:
            line = await asyncio.wait_for(reader.readline(), max(deadline - time.perf_counter(), 0.001))
            if not line:
                break
            if status is None:
                status = int(line.split()[1])
            elif line.startswith(b"data: "):
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    break
                choice = json.loads(payload).get("choices", [{}])
                text = choice[0].get("text", "") if choice else ""
                if text:
                    times.append(time.perf_counter())
                    parts.append(text)
    finally:
        writer.close()
    return {"status": status, "sent": t0, "times": times, "text": "".join(parts)}


def _client_process(port: int, jobs: list[tuple[int, str]], tokens: int, timeout: float, start_at: float, out):
    async def main():
        await asyncio.sleep(max(start_at - time.time(), 0))
        results = await asyncio.gather(*(stream(port, p, tokens, timeout) for _, p in jobs), return_exceptions=True)
        return [(i, r if isinstance(r, dict) else {"error": repr(r)}) for (i, _), r in zip(jobs, results)]
    out.put(asyncio.run(main()))


def run_clients(port: int, prompts: list[str], tokens: int, processes: int, timeout: float) -> list[dict]:
    """Every prompt as one concurrent stream, spread over `processes` client processes started together.
    Times are perf_counter values of each process (same clock on Linux: CLOCK_MONOTONIC)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0
    jobs = list(enumerate(prompts))
    procs = [ctx.Process(target=_client_process, args=(port, jobs[k::processes], tokens, timeout, start_at, out))
             for k in range(processes)]
    for p in procs:
        p.start()
    results: dict[int, dict] = {}
    for _ in procs:
        results.update(out.get(timeout=timeout + 60))
    for p in procs:
        p.join(timeout=10)
    return [results[i] for i in range(len(prompts))]


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=256, help="max_tokens of every request")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--distinct", type=int, default=16, help="different prompts (each also sent alone)")
    ap.add_argument("--processes", type=int, default=4, help="client processes")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds a client waits at most")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of this script on the kernels' twins")
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)  # internal: run the server on this port
    args = ap.parse_args()
    if args.serve:
        return serve(args.preset, args.serve, args.max_batch, args.device)
    import random

    import torch

    from bench.record import record
    batch = min(args.clients, args.max_batch)
    bare = bare_step_rate(args.preset, batch, args.device)
    bare_med = sorted(bare)[1]
    print(f"bare batched step, batch {batch}: {bare_med:.0f} tok/s", flush=True)
    rng = random.Random(0)
    from mmfree_cli.model import preset
    vocab = preset(args.preset).vocab_size
    distinct = [" ".join(str(rng.randrange(vocab)) for _ in range(8)) for _ in range(args.distinct)]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--preset", args.preset,
                               "--max-batch", str(args.max_batch), "--device", args.device], env=env)
    try:
        deadline = time.time() + 300
        while True:  # up and warmed (the first request waits for every bucket's graph)
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                warm = asyncio.run(stream(port, distinct[0], 2, 300))
                if warm["status"] == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the server did not come up in 300 s") from None
                time.sleep(1)
        solo = {p: asyncio.run(stream(port, p, args.tokens, args.timeout))["text"] for p in distinct}
        prompts = [distinct[i % len(distinct)] for i in range(args.clients)]
        t_wall = time.perf_counter()
        results = run_clients(port, prompts, args.tokens, args.processes, args.timeout)
        print(f"load phase: {time.perf_counter() - t_wall:.1f} s wall", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ok = [r for r in results if "times" in r and r["status"] == 200]
    errors = len(results) - len(ok)
    total = sum(len(r["times"]) for r in ok)
    span = max(r["times"][-1] for r in ok if r["times"]) - min(r["sent"] for r in ok)
    aggregate = total / span
    ttft = [r["times"][0] - r["sent"] for r in ok if r["times"]]
    itl = [b - a for r in ok for a, b in zip(r["times"], r["times"][1:])]
    equal = sum(r["text"] == solo[p] for r, p in zip(results, prompts) if "times" in r)
    ratio = aggregate / bare_med
    print(f"{args.clients} clients x {args.tokens} tokens: {total} tokens in {span:.2f} s = {aggregate:.0f} tok/s "
          f"({ratio:.2f}x the bare step); TTFT p50 {percentile(ttft, .5) * 1e3:.0f} ms p99 "
          f"{percentile(ttft, .99) * 1e3:.0f} ms; ITL p50 {percentile(itl, .5) * 1e3:.1f} ms p99 "
          f"{percentile(itl, .99) * 1e3:.1f} ms; solo text equal {equal}/{args.clients}; errors {errors}", flush=True)
    bench = f"serve_load_{args.preset}"
    notes = (f"{args.clients} concurrent streaming /v1/completions clients (greedy) over loopback, {args.processes} "
             f"client processes, {args.tokens} new tokens each, --max-batch {args.max_batch}, {args.distinct} "
             f"distinct 8-token prompts; random ternary weights; {torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'}, one run")
    record(bench, f"bare batched step tokens/s batch {batch}", bare, "tok/s", notes=notes)
    record(bench, "aggregate tokens/s", aggregate, "tok/s", notes=notes)
    record(bench, "aggregate / bare batched step", ratio, "x", ">= 0.7", ratio >= 0.7, notes)
    record(bench, "time to first token p50", percentile(ttft, .5) * 1e3, "ms", notes=notes)
    record(bench, "time to first token p99", percentile(ttft, .99) * 1e3, "ms", notes=notes)
    record(bench, "inter-token latency p50", percentile(itl, .5) * 1e3, "ms", notes=notes)
    record(bench, "inter-token latency p99", percentile(itl, .99) * 1e3, "ms", notes=notes)
    record(bench, "clients whose text equals the solo text", equal, f"of {args.clients}", f"= {args.clients}",
           equal == args.clients, notes)
    record(bench, "failed requests", errors, "", "= 0", errors == 0, notes)


if __name__ == "__main__":
    main()
