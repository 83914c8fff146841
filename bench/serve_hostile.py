"""`mmfree serve` under attack, on loopback: while one client sends a 50 MB body, one a 32k-token
prompt and one four long stop strings, 16 other clients stream greedy answers. Measured: those
16 clients' inter-token p99 against their solo p99 (each alone, before the attack), whether each
got exactly its solo text, the hostile requests' status codes, and the server's peak memory
growth during the attack (VmHWM after resetting it, minus VmRSS before).

    python bench/serve_hostile.py                       # record rows through bench/record.py
    python bench/serve_hostile.py --clients 4 --no-record

`run_attack` is also used by tests/test_serve_load.py, which asserts the behaviour (exact texts,
status codes), never the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

PROMPTS = ["ROMEO:", "To be, or not", "Once upon a time", "The quick brown fox", "x", "42", "Hello", "KING:"]
BODY_BYTES = 50 << 20


def make_model(directory: Path, hidden: int = 128, layers: int = 4) -> Path:
    """A random byte-level model whose greedy text is printable ASCII (other output rows zeroed)."""
    import torch

    from mmfree_cli.data.tokenizer import ByteTokenizer
    from mmfree_cli.model import HGRNBitConfig, HGRNBitForCausalLM, save_pretrained
    torch.manual_seed(0)
    tok = ByteTokenizer()
    config = HGRNBitConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=2 * hidden, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    model = HGRNBitForCausalLM(config)
    keep = torch.zeros(tok.vocab_size, dtype=torch.bool)
    keep[32:127] = True
    with torch.no_grad():
        model.model.lower_bounds[1:] = 5.0
        model.lm_head.weight[~keep] = 0.0
    save_pretrained(model, directory)
    tok.save(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Server:
    def __init__(self, model: Path, max_batch: int, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        mmfree = str(Path(sys.executable).parent / "mmfree")
        self.proc = subprocess.Popen([mmfree, "serve", str(model), "--port", str(self.port), "--model-name", "m",
                                      "--dtype", "float64", "--max-batch", str(max_batch), *extra],
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("the server did not come up")
            time.sleep(0.3)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stream(url: str, prompt: str, max_tokens: int) -> tuple[str, list[float]]:
    """One streamed greedy completion: (text, seconds between successive text chunks)."""
    body = {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    parts, stamps = [], []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            text = json.loads(line[6:])["choices"][0]["text"]
            if text:
                parts.append(text)
                stamps.append(time.perf_counter())
    return "".join(parts), [b - a for a, b in zip(stamps, stamps[1:])]


def p99(gaps: list[float]) -> float:
    return statistics.quantiles(gaps, n=100)[98] if len(gaps) >= 2 else (gaps[0] if gaps else 0.0)


def huge_body(url: str) -> dict:
    """Declare a 50 MB body and send it until the server answers; returns its status and bytes sent."""
    host, port = url.removeprefix("http://").split(":")
    sent, status = 0, None
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {BODY_BYTES}\r\n\r\n").encode())
        block = b"{" + b" " * (1 << 20)
        try:
            while sent < BODY_BYTES:
                s.sendall(block[:min(len(block), BODY_BYTES - sent)])
                sent += min(len(block), BODY_BYTES - sent)
        except OSError:
            pass  # the server answered and closed: the rest is never read
        try:
            status = int(s.recv(64).split()[1])
        except (OSError, IndexError, ValueError):
            status = None
    return {"status": status, "bytes_sent": sent}


def post(url: str, body: dict) -> int:
    return httpx.post(url + "/v1/completions", json=body, timeout=600).status_code


def concurrently(url: str, prompts: list[str], max_tokens: int, others: list[threading.Thread] = ()) -> list:
    """Stream every prompt at once (and start `others` just after); [(text, gaps)] per prompt."""
    out: list = [None] * len(prompts)

    def client(i: int) -> None:
        out[i] = stream(url, prompts[i], max_tokens)
    streams = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in streams:
        t.start()
    time.sleep(0.05)
    for t in others:
        t.start()
    for t in [*streams, *others]:
        t.join()
    return out


def run_attack(model: Path, clients: int = 16, max_tokens: int = 64, prompt_tokens: int = 32768,
               stop_chars: int = 100_000) -> dict:
    """The whole scenario on a fresh server; returns texts, gaps, statuses and memory figures."""
    server = Server(model, max_batch=clients + 4, extra=["--max-prompt-tokens", str(prompt_tokens)])
    try:
        prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(clients)]
        stream(server.url, "warm up", 4)
        solo = [stream(server.url, p, max_tokens) for p in prompts]
        together = concurrently(server.url, prompts, max_tokens)  # the batch alone, no attack: a second baseline
        rss_before = memory_kib(server.proc.pid, "VmRSS")
        Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
        results: dict = {}

        def hostile(name: str, fn, *args) -> None:
            results[name] = fn(*args)
        long_prompt = {"model": "m", "prompt": "ab" * (prompt_tokens // 2), "max_tokens": 4, "temperature": 0}
        long_stops = {"model": "m", "prompt": "x", "max_tokens": 32, "temperature": 0,
                      "stop": [c * stop_chars for c in "qwer"]}
        allowed_stops = {**long_stops, "stop": [c * 256 for c in "qwer"]}
        threads = [threading.Thread(target=hostile, args=("body_50MB", huge_body, server.url)),
                   threading.Thread(target=hostile, args=(f"prompt_{prompt_tokens}", post, server.url, long_prompt)),
                   threading.Thread(target=hostile, args=(f"stops_4x{stop_chars}", post, server.url, long_stops)),
                   threading.Thread(target=hostile, args=("stops_4x256", post, server.url, allowed_stops))]
        busy = concurrently(server.url, prompts, max_tokens, threads)
        peak = memory_kib(server.proc.pid, "VmHWM")
        return {"solo_texts": [t for t, _ in solo], "busy_texts": [t for t, _ in busy],
                "solo_p99": [p99(g) for _, g in solo], "busy_p99": [p99(g) for _, g in busy],
                "together_p99": [p99(g) for _, g in together],
                "hostile": results, "memory_growth_mb": (peak - rss_before) / 1024, "rss_before_mb": rss_before / 1024}
    finally:
        server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=32768)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = run_attack(make_model(Path(tmp) / "m"), args.clients, args.max_tokens, args.prompt_tokens)
    ratios = [b / s for b, s in zip(out["busy_p99"], out["solo_p99"]) if s > 0]
    exact = sum(a == b for a, b in zip(out["solo_texts"], out["busy_texts"]))
    print(json.dumps({**{k: v for k, v in out.items() if not k.endswith("texts")}, "p99_ratio": ratios,
                      "exact_texts": exact}, indent=1))
    if args.no_record:
        return
    from bench.record import record
    load = os.getloadavg()[0]
    note = (f"{args.clients} streaming clients x {args.max_tokens} greedy tokens, random tiny byte model (128 x 4, "
            f"float64, torch engine), server and clients on one shared 2-core machine (load average {load:.0f}); the attack: a 50 MB body, a "
            f"{args.prompt_tokens}-token prompt, 4 stop strings of 100,000 chars (refused) and 4 of 256 (served)")
    record("serve_hostile", "inter-token p99 under attack / solo p99", ratios, "x", target="< 5", met=max(ratios) < 5,
           notes=note)
    record("serve_hostile", "solo inter-token p99", [1000 * v for v in out["solo_p99"]], "ms", notes=note)
    record("serve_hostile", "inter-token p99 under attack", [1000 * v for v in out["busy_p99"]], "ms", notes=note)
    record("serve_hostile", "inter-token p99, the 16 together without attack", [1000 * v for v in out["together_p99"]],
           "ms", notes=note)
    record("serve_hostile", "clients with their exact solo text", float(exact), "clients",
           target=f"= {args.clients}", met=exact == args.clients, notes=note)
    record("serve_hostile", "server peak memory growth during the attack", out["memory_growth_mb"], "MB",
           target="< 500", met=out["memory_growth_mb"] < 500, notes=note)
    record("serve_hostile", "hostile statuses (50MB body, 32k prompt, 4x100k stops, 4x256 stops)",
           [float(out["hostile"][k]["status"] if isinstance(out["hostile"][k], dict) else out["hostile"][k])
            for k in out["hostile"]], "HTTP status", notes=json.dumps(out["hostile"]))


if __name__ == "__main__":
    main()
