"""`mmfree bench`: the engines side by side on one model — prefill and decode tokens/s, memory,
and how close batch-1 decode comes to the memory-bandwidth bound.

Batch-1 decode reads every weight once per token, so its best possible speed is
bandwidth / bytes-per-token. Bytes per token are the engine's own figure when it reports one
(`describe()["weight_bytes_per_token"]`, e.g. the cpu engine), else the packed model's: 2 bits a
ternary weight, 2 bytes a float parameter, one embedding row. Bandwidth is measured here, on the
engine's device, by a streaming read of a buffer as large as those bytes (so it comes from the
same cache level as the weights do; 4 MiB at least, so that call overhead is not taken for
memory time), unless the caller gives one.

Engines run one after another in this process, each from a fresh load: memory is the growth of
the peak resident set while loading and running it, one-time compilation included (numba's LLVM
for the cpu engine, onnxruntime's session); Linux; on CUDA the peak device allocation.
Engines that read only an export (onnx) get one exported to a temporary directory first; an engine
that cannot run here (no GPU, no export) gets a row saying why instead of figures.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .engines import ENGINES, load_engine
from .engines.base import Engine
from .errors import UserError

EXPORT_ONLY = {"onnx"}
"""Engines that load only an export of their own target."""
NOT_BENCHED = {"fpga": "not benchmarked here: a card's figures come from `mmfree deploy`"}
MIN_BUFFER_BYTES = 4 << 20
MIN_TIMED_S = 0.02
"""Shortest timed stretch of a bandwidth measurement (tiny buffers are read many times)."""


def default_engines() -> list[str]:
    return ["torch", "cpu", "onnx"] + (["cuda"] if torch.cuda.is_available() else [])


def parse_engines(spec: str | None) -> list[str]:
    names = default_engines() if not spec else [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise UserError(f"--engines: unknown engine {', '.join(unknown) or '(none)'} — choose from {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def packed_bytes_per_token(config) -> int:
    """Bytes one decode step must read from a packed model: ternary weights at 2 bits, float
    parameters (norms, lower bounds) at 2 bytes, and one row of the embedding."""
    from .model import HGRNBitForCausalLM
    from .model.layers import BitLinear
    with torch.device("meta"):
        model = HGRNBitForCausalLM(config, init=False)
    ternary = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, BitLinear)}
    total = 0
    for name, p in model.named_parameters():
        if name in ternary:
            total += (p.numel() + 3) // 4
        elif "embeddings" in name:
            total += 2 * config.hidden_size
        else:
            total += 2 * p.numel()
    return total


def stream_bandwidth(nbytes: int, device: torch.device, repeats: int) -> list[float]:
    """GB/s of a streaming read (a sum) over a buffer of `nbytes` on `device`, once per repeat.
    On the CPU, the faster of one thread and all of torch's threads (on a busy machine the
    threads contend and one is faster; the bound is the best the memory can do)."""
    # at least 4 MiB: below that the call overhead of the sum, not the memory, sets the time
    buf = torch.ones(max(nbytes, MIN_BUFFER_BYTES) // 4, dtype=torch.float32, device=device)
    if device.type == "cuda":
        return _timed_reads(buf, repeats, torch.cuda.synchronize)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in sorted({1, threads}):
            torch.set_num_threads(n)
            results.append(_timed_reads(buf, repeats, lambda: None))
    finally:
        torch.set_num_threads(threads)
    return [max(column) for column in zip(*results)]


def _timed_reads(buf: torch.Tensor, repeats: int, sync: Callable[[], None]) -> list[float]:
    buf.sum()
    sync()
    inner, elapsed = 1, 0.0
    while elapsed < MIN_TIMED_S:  # calibrate how many reads make a measurable stretch
        inner *= 2
        t0 = time.perf_counter()
        for _ in range(inner):
            buf.sum()
        sync()
        elapsed = time.perf_counter() - t0
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            buf.sum()
        sync()
        out.append(buf.numel() * 4 * inner / (time.perf_counter() - t0) / 1e9)
    return out


class PeakMemory:
    """Peak resident-set growth (bytes) of this process over a `with` block; CUDA: peak allocation."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.peak = cuda, 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            self.base = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _status_kib("VmHWM") * 1024 - self.base


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; no reset possible


def _reset_peak_rss() -> None:
    try:  # Linux ≥ 4.0: writing 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def measure_engine(engine: Engine, prefill_tokens: int, decode_tokens: int, repeats: int
                   ) -> dict[str, list[float]]:
    """Prefill tokens/s of one [1, prefill_tokens] prompt and batch-1 greedy decode tokens/s."""
    vocab = engine.config.vocab_size
    prompt = torch.randint(0, vocab, (1, prefill_tokens), generator=torch.Generator().manual_seed(0))
    engine.prefill(prompt, engine.new_state(1))  # warm-up: compilation, sessions, graphs
    logits, state = engine.prefill(prompt[:, :8], engine.new_state(1))
    engine.step(logits[:, -1].argmax(-1), state)

    def decode() -> None:
        token, s = logits[:, -1].argmax(-1), state
        for _ in range(decode_tokens):
            out, s = engine.step(token, s)
            token = out.argmax(-1)

    prefill_s = timed(lambda: engine.prefill(prompt, engine.new_state(1)), repeats)
    decode_s = timed(decode, repeats)
    return {"prefill": [prefill_tokens / t for t in prefill_s], "decode": [decode_tokens / t for t in decode_s]}


def engine_path(name: str, model_dir: Path, workdir: Path) -> Path:
    """The directory engine `name` loads: the model itself, or an export of it made in `workdir`."""
    from .fileio import read_json
    manifest = model_dir / "manifest.json"
    target = read_json(manifest).get("target") if manifest.is_file() else None
    if target == name:
        return model_dir
    if target in ENGINES:
        raise UserError(f"{model_dir.name} is a {target} export — give a run or packed directory to bench {name}")
    if name in EXPORT_ONLY:
        from .export import run_export
        return run_export(name, model_dir, workdir / name)
    return model_dir


def bench_engine(name: str, model_dir: Path, workdir: Path, prefill_tokens: int, decode_tokens: int,
                 repeats: int, bandwidth: float | None, threads: int | None) -> dict[str, Any]:
    """One row of the table: the engine's speeds, memory and fraction of the bandwidth bound,
    or {"engine", "error"} when it cannot run here."""
    if name in NOT_BENCHED:
        return {"engine": name, "error": NOT_BENCHED[name]}
    cuda = name == "cuda" and torch.cuda.is_available()  # without a GPU the load says why
    try:
        path = engine_path(name, model_dir, workdir)
        with PeakMemory(cuda) as memory:
            engine = load_engine(name, path, **({"threads": threads} if threads else {}))
            speeds = measure_engine(engine, prefill_tokens, decode_tokens, repeats)
    except UserError as e:
        return {"engine": name, "error": str(e)}
    facts = engine.describe()
    nbytes = int(facts.get("weight_bytes_per_token") or packed_bytes_per_token(engine.config))
    bandwidths = [bandwidth] if bandwidth else stream_bandwidth(nbytes, torch.device("cuda" if cuda else "cpu"), repeats)
    decode, bw = statistics.median(speeds["decode"]), statistics.median(bandwidths)
    return {"engine": name, "device": str(facts.get("device", "cpu")),
            "prefill_tok_s": statistics.median(speeds["prefill"]), "prefill_samples": speeds["prefill"],
            "decode_tok_s": decode, "decode_samples": speeds["decode"],
            "memory_mib": memory.peak / 2**20, "memory_kind": "cuda peak allocated" if cuda else "peak RSS growth",
            "bytes_per_token": nbytes, "bandwidth_gb_s": bw, "bandwidth_measured": not bandwidth,
            "bound_tok_s": bw * 1e9 / nbytes, "bound_fraction": decode * nbytes / (bw * 1e9)}


def bench(model: str | Path | None = None, engines: str | None = None, prefill_tokens: int = 128,
          decode_tokens: int = 32, repeats: int = 3, bandwidth: float | None = None,
          threads: int | None = None) -> dict[str, Any]:
    """Benchmark `engines` (comma-separated; default torch,cpu,onnx and cuda with a GPU) on MODEL
    (default: the newest run) → {"model", settings, "engines": [one row per engine]}."""
    from .paths import resolve_model
    names = parse_engines(engines)
    if min(prefill_tokens, decode_tokens, repeats) < 1:
        raise UserError("--prefill-tokens, --decode-tokens and --repeats must be at least 1")
    if bandwidth is not None and bandwidth <= 0:
        raise UserError(f"--bandwidth must be positive GB/s, got {bandwidth}")
    model_dir = resolve_model(model)
    if threads:
        torch.set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="mmfree-bench-") as work:
        rows = [bench_engine(n, model_dir, Path(work), prefill_tokens, decode_tokens, repeats, bandwidth, threads)
                for n in names]
    return {"model": str(model_dir), "prefill_tokens": prefill_tokens, "decode_tokens": decode_tokens,
            "repeats": repeats, "load_average": load, "engines": rows}


def table(report: dict[str, Any]):
    """The side-by-side rich Table of a `bench` report (engines that could not run: a note each)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text
    t = Table(title=f"{Path(report['model']).name}: prefill {report['prefill_tokens']} tokens, decode "
                    f"{report['decode_tokens']} tokens at batch 1, median of {report['repeats']}")
    for column in ("engine", "prefill\ntok/s", "decode\ntok/s", "memory\nMiB", "bytes/\ntoken", "GB/s", "% of\nbound"):
        t.add_column(column, justify="left" if column == "engine" else "right")
    notes = ["memory: peak RSS growth while loading and running (cuda: peak allocated); % of bound: "
             "decode tok/s × bytes/token ÷ GB/s (streaming read bandwidth"
             + (f", measured here at load average {report['load_average']:.1f})" if report.get("load_average") else ")")]
    for row in report["engines"]:
        if "error" in row:
            t.add_row(row["engine"], *["n/a"] * 6)
            notes.append(f"{row['engine']}: {row['error']}")
            continue
        t.add_row(row["engine"], f"{row['prefill_tok_s']:,.1f}", f"{row['decode_tok_s']:,.1f}",
                  f"{row['memory_mib']:,.1f}", f"{row['bytes_per_token']:,}", f"{row['bandwidth_gb_s']:,.1f}",
                  _percent(row["bound_fraction"]))
    return Group(t, *(Text(n) for n in notes))


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}" if fraction >= 0.01 else f"{100 * fraction:.4f}"  # tiny, not "0.00"


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Bar charts of prefill and decode tokens/s and % of the bound per engine, as a PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_path
    rows = [r for r in report["engines"] if "error" not in r]
    if not rows:
        raise UserError("no engine ran, nothing to plot — see the table for why")
    names = [r["engine"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label in zip(axes, ("prefill_tok_s", "decode_tok_s", "bound_fraction"),
                              ("prefill tokens/s", "decode tokens/s (batch 1)", "% of the bandwidth bound")):
        values = [100 * r[key] if key == "bound_fraction" else r[key] for r in rows]
        ax.bar(names, values, color="#4c72b0")
        ax.set_title(label)
        ax.bar_label(ax.containers[0], fmt="%.3g" if key == "bound_fraction" else "{:,.0f}")
    fig.suptitle(Path(report["model"]).name)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
