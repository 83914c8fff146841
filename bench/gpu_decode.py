"""Decode and prefill speed of the cuda engine on the 1.3B shape (random ternary weights; speed
does not depend on the values), with the bf16 Transformer++ (static KV cache, CUDA graph;
bench/tpp_decode.py) measured in the same run as the baseline. Needs a CUDA GPU.

Records: resident weight memory (packed codes, scales, gains, bf16 embedding); batch-1 decode
tokens/s (CUDA-graph step, logits left on the GPU; through `engine.step_greedy`, the argmax made on
the GPU and only the token id copied to the host; through `engine.step`, logits copied); batched
decode at batch 64 and 256 as the server runs it (`BatchedDecoder.step`: slots resident on the GPU,
graph replay, tokens chosen on the GPU; five runs, their spread) and through `engine.step_device`
(state copied in and out); prefill tokens/s for 2,048 tokens. `--variants` also records batch-1
decode for each entry of VARIANTS, `--batched-variants` batched decode for each of BATCHED_VARIANTS
(tiles, PDL), in the same process on the same weights; `--profile` prints where a batch-1 step's
time goes, launch by launch, and a batched step's kernel times (not recorded).

    python -m bench.gpu_decode [--preset 1.3b] [--steps 200] [--variants] [--batched-variants] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench.record` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.record import record
from mmfree_cli.engines.cuda import CudaEngine
from mmfree_cli.model import preset
from mmfree_cli.quant.packing import pack_i2


def bitlinear_shapes(config) -> dict[str, tuple[int, int]]:
    d, inner = config.hidden_size, config.intermediate_size
    shapes = {"lm_head": (config.vocab_size, d)}
    for l in range(config.num_hidden_layers):
        for k in "ifgo":
            shapes[f"model.layers.{l}.attn.{k}_proj"] = (d, d)
        shapes[f"model.layers.{l}.mlp.gate_proj"] = (2 * inner, d)
        shapes[f"model.layers.{l}.mlp.down_proj"] = (d, inner)
    return shapes


def random_tensors(config, device: str) -> dict[str, torch.Tensor]:
    """Export-format tensors (checkpoint keys, i2-packed weights) with random values, on `device`."""
    g = torch.Generator(device).manual_seed(0)
    d = config.hidden_size
    t = {"model.embeddings.weight": (torch.randn(config.vocab_size, d, device=device, generator=g) * 0.02
                                     ).bfloat16(),
         "model.lower_bounds": torch.randn(config.num_hidden_layers, d, device=device, generator=g),
         "model.norm.weight": torch.ones(d, device=device)}
    for name, (n, k) in bitlinear_shapes(config).items():
        t[f"{name}.weight"] = pack_i2(torch.randint(-1, 2, (n, k), device=device, generator=g, dtype=torch.int8))
        t[f"{name}.weight_beta"] = torch.full((1,), 0.02, device=device)
        t[f"{name}.norm.weight"] = torch.ones(k, device=device)
    for l in range(config.num_hidden_layers):
        for norm in ("attn_norm", "mlp_norm", "attn.g_norm"):
            t[f"model.layers.{l}.{norm}.weight"] = torch.ones(d, device=device)
    return t


def decode_rates(engine: CudaEngine, batch: int, steps: int, repeats: int = 3, host: bool = False) -> list[float]:
    state = engine.new_state(batch)
    tokens = torch.randint(0, engine.config.vocab_size, (batch,), device="cuda")
    run = engine.step if host else engine.step_device
    for _ in range(3):
        logits, state = run(tokens, state)
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            logits, state = run(tokens, state)
        torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - t0))
    assert torch.isfinite(logits).all()
    return rates


def batched_rates(engine: CudaEngine, batch: int, steps: int, repeats: int = 5) -> list[float]:
    """tokens/s of `BatchedDecoder.step` with all `batch` slots live (the server's step)."""
    decoder = engine.batched_decoder(batch)
    decoder.tokens.copy_(torch.randint(0, engine.config.vocab_size, (batch,)))
    for _ in range(3):
        decoder.step(batch)
    sync = torch.cuda.synchronize if decoder.device.type == "cuda" else (lambda: None)
    rates = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            chosen = decoder.step(batch)
        sync()
        rates.append(batch * steps / (time.perf_counter() - t0))
    assert ((chosen >= 0) & (chosen < engine.config.vocab_size)).all()
    return rates


def greedy_rates(engine: CudaEngine, steps: int, repeats: int = 3) -> list[float]:
    """Batch-1 tokens/s through `engine.step_greedy`, each step's token fed back from the host."""
    state = engine.new_state(1)
    token = torch.zeros(1, dtype=torch.long)
    for _ in range(3):
        token, state = engine.step_greedy(token, state)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            token, state = engine.step_greedy(token, state)
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def prefill_rates(engine: CudaEngine, length: int, repeats: int = 3) -> list[float]:
    tokens = torch.randint(0, engine.config.vocab_size, (1, length), device="cuda")
    with torch.inference_mode():
        engine.forward(tokens, engine.new_state(1))  # autotune
        rates = []
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            engine.forward(tokens, engine.new_state(1))
            torch.cuda.synchronize()
            rates.append(length / (time.perf_counter() - t0))
    return rates


VARIANTS = {
    "pdl": {},
    "no pdl": {"PDL": False},
    "d 16/8": {"TILES": {"d": (16, 8)}},
    "head 64/4": {"TILES": {"head": (64, 4)}},
    "head 128/8": {"TILES": {"head": (128, 8)}},
}
"""name → switches of `kernels/ternary_gemm/decode.py` that differ from its defaults (PDL; TILES,
merged into the default table)."""


BATCHED_VARIANTS = {
    "defaults": {},
    "pdl at every batch": {"PDL_MAX_ROWS": 1 << 30},
    "no pdl": {"PDL": False},
    "64 narrow 64/16/128/4": {"TILES": {(64, "narrow"): (64, 16, 128, 4)}, "batches": (64,)},
    "64 narrow 32/32/128/4": {"TILES": {(64, "narrow"): (32, 32, 128, 4)}, "batches": (64,)},
    "64 wide 64/64/128/4": {"TILES": {(64, "wide"): (64, 64, 128, 4)}, "batches": (64,)},
    "64 wide 64/32/64/4": {"TILES": {(64, "wide"): (64, 32, 64, 4)}, "batches": (64,)},
    "64 narrow 64/32/64/4": {"TILES": {(64, "narrow"): (64, 32, 64, 4)}, "batches": (64,)},
    "64 all 64/32/128/8": {"TILES": {(64, "wide"): (64, 32, 128, 8), (64, "narrow"): (64, 32, 128, 8)},
                           "batches": (64,)},
    "256 narrow 64/32/128/4": {"TILES": {(256, "narrow"): (64, 32, 128, 4)}, "batches": (256,)},
    "256 narrow 128/32/64/8": {"TILES": {(256, "narrow"): (128, 32, 64, 8)}, "batches": (256,)},
    "256 wide 128/64/128/8": {"TILES": {(256, "wide"): (128, 64, 128, 8)}, "batches": (256,)},
}
"""name → switches of kernels/ternary_gemm/batched.py (PDL, PDL_MAX_ROWS, TILES merged into the default
table), and the batches it is timed at; engines/cuda.py's BATCHED False (the previous path, rowwise
kernels and the autotuned GEMM) was timed by the variant "rowwise + autotuned GEMM"."""


def _batched_variants(engine: CudaEngine, args, bench: str, notes: str) -> None:
    from mmfree_cli.kernels.ternary_gemm import batched
    defaults = {"PDL": batched.PDL, "PDL_MAX_ROWS": batched.PDL_MAX_ROWS, "TILES": dict(batched.TILES)}
    for name, switches in BATCHED_VARIANTS.items():
        batched.PDL = switches.get("PDL", defaults["PDL"])
        batched.PDL_MAX_ROWS = switches.get("PDL_MAX_ROWS", defaults["PDL_MAX_ROWS"])
        batched.TILES = {**defaults["TILES"], **switches.get("TILES", {})}
        for batch in switches.get("batches", (64, 256)):
            try:
                rates = batched_rates(engine, batch, args.steps // 2, repeats=3)
            except Exception as e:  # a variant that does not compile is reported, not fatal
                print(f"batched step, batch {batch} [{name}]: failed: {type(e).__name__}: {e}", flush=True)
                continue
            print(f"batched step, batch {batch} [{name}]: {sorted(rates)[1]:.0f} tok/s", flush=True)
            record(bench, f"batched decode tokens/s batch {batch} [{name}]", rates, "tok/s",
                   notes=f"{notes}; this variant: PDL {batched.PDL} up to {batched.PDL_MAX_ROWS} rows, "
                         f"tiles {batched.TILES}")
    batched.PDL, batched.PDL_MAX_ROWS, batched.TILES = defaults["PDL"], defaults["PDL_MAX_ROWS"], defaults["TILES"]


def profile_batched(engine: CudaEngine, batch: int) -> None:
    """Print each launch role's mean kernel time in an eager batched decode step (not recorded)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    tokens = torch.zeros(batch, dtype=torch.long, device="cuda")
    state = engine.new_state(batch)
    with torch.inference_mode():
        engine.decode_batch(tokens, state)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            engine.decode_batch(tokens, state)
            torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    ours = [e for e in kernels if "_rows_" in e.name or "_planar_gemm" in e.name]
    roles = ["norm ifg", "gemm ifg", "step", "gemm o", "norm gate", "gemm gate", "glu", "gemm down"]
    times: dict[str, list[float]] = {}
    for i, e in enumerate(ours):
        role = roles[i % 8] if i < 8 * engine.config.num_hidden_layers else ["norm head", "gemm head"][i % 2]
        times.setdefault(role, []).append(e.time_range.end - e.time_range.start)
    span = kernels[-1].time_range.end - kernels[0].time_range.start
    print(f"batched step at batch {batch}, eager: {span:.0f} us first to last kernel; kernel us (mean):", flush=True)
    for role, t in times.items():
        print(f"  {role:10s} {sum(t) / len(t):8.2f} x {len(t)}", flush=True)


def set_variant(engine: CudaEngine, name: str, defaults: dict) -> None:
    """Switch the fused GEMV's variant; the captured graphs hold the old kernels, so drop them."""
    from mmfree_cli.kernels.ternary_gemm import decode
    decode.PDL = VARIANTS[name].get("PDL", defaults["PDL"])
    decode.TILES = {**defaults["TILES"], **VARIANTS[name].get("TILES", {})}
    engine._graphs.clear()


def profile(engine: CudaEngine, steps: int = 5) -> None:
    """Print, for CUDA-graph batch-1 steps, each launch role's kernel time and the idle gap before it
    (end of the previous kernel to start of this one; negative when launches overlap), then the
    whole step. Diagnostics only."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    tokens = torch.zeros(1, dtype=torch.long, device="cuda")
    state = engine.new_state(1)
    engine.step_device(tokens, state)
    with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step_device(tokens, state)
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
    if not any("decode_gemv" in e.name for e in kernels) and engine.use_graph:
        print("(the profiler saw no kernels inside graph replays: eager steps instead)", flush=True)
        engine.use_graph = False
        try:
            return profile(engine, steps)
        finally:
            engine.use_graph = True
    roles: dict[str, list[tuple[float, float]]] = {}
    gemv = 0
    for prev, e in zip([None] + kernels[:-1], kernels):
        if "decode_gemv" in e.name:
            per_layer = 4 * engine.config.num_hidden_layers
            role = "head" if gemv % (per_layer + 1) == per_layer else ["ifg", "o+step", "gate/up", "down+glu"][gemv % 4]
            gemv += 1
        else:
            role = e.name[:40]
        gap = e.time_range.start - prev.time_range.end if prev is not None else 0.0
        roles.setdefault(role, []).append((e.time_range.end - e.time_range.start, gap))
    span = (kernels[-1].time_range.end - kernels[0].time_range.start) / steps
    print(f"{'launch':42s} {'per step':>8s} {'kernel us':>9s} {'gap us':>7s}", flush=True)
    for role, vals in sorted(roles.items(), key=lambda kv: -sum(v[0] + v[1] for v in kv[1])):
        n = len(vals)
        print(f"{role:42s} {n / steps:8.1f} {sum(v[0] for v in vals) / n:9.2f} {sum(v[1] for v in vals) / n:7.2f}")
    print(f"step (first kernel start to last kernel end, incl. gaps between steps): {span:.1f} us", flush=True)


def _variants(engine: CudaEngine, args, bench: str, notes: str) -> None:
    from mmfree_cli.kernels.ternary_gemm import decode
    if not args.variants:
        return
    defaults = {"PDL": decode.PDL, "TILES": dict(decode.TILES)}
    for name in VARIANTS:
        if name == "pdl" and not decode._pdl_supported():
            print(f"{name}: this Triton has no programmatic dependent launch, skipped", flush=True)
            continue
        set_variant(engine, name, defaults)
        rates = decode_rates(engine, 1, args.steps)
        print(f"decode batch 1 [{name}]: {sorted(rates)[1]:.0f} tok/s", flush=True)
        record(bench, f"decode tokens/s batch 1 [{name}]", rates, "tok/s",
               notes=notes.replace(f"tiles {defaults['TILES']}", f"PDL {decode.PDL}, tiles {decode.TILES}"))
        if args.profile:
            profile(engine)
    decode.PDL, decode.TILES = defaults["PDL"], defaults["TILES"]
    engine._graphs.clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1.3b")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="also print a kernel time table (not recorded)")
    ap.add_argument("--variants", action="store_true", help="also record batch-1 decode for each GEMV variant")
    ap.add_argument("--batched-variants", action="store_true", help="also record batched decode for each variant")
    ap.add_argument("--only-batch1", action="store_true", help="skip batched decode, the baseline and prefill")
    args = ap.parse_args()
    import triton

    from bench import tpp_decode
    from mmfree_cli.kernels.ternary_gemm import batched, decode
    config = preset(args.preset)
    engine = CudaEngine(config, random_tensors(config, "cuda"), tokenizer=None, device="cuda")
    torch.cuda.empty_cache()
    bench = f"gpu_decode_{args.preset}"
    notes = (f"random ternary weights, CUDA graph; torch {torch.__version__}, triton {triton.__version__}, "
             f"CUDA {torch.version.cuda}; {torch.cuda.get_device_name(0)}; batch-1 decode: fused GEMVs, product one "
             f"bit plane at a time, gains/state/β loaded before the PDL wait, tiles {decode.TILES}")
    bnotes = (f"{notes.split('; batch-1')[0]}; batched kernels (planar codes, tensor-core product one bit plane at "
              f"a time, no split-K), PDL {batched.PDL} up to {batched.PDL_MAX_ROWS} rows, tiles {batched.TILES}")
    resident = engine.resident_bytes() / 1e9
    print(f"resident weights {resident:.3f} GB", flush=True)
    record(bench, "resident weights", resident, "GB", "<= 0.5", resident <= 0.5, notes)
    rates = decode_rates(engine, 1, args.steps)
    med = sorted(rates)[1]
    print(f"decode batch 1: {med:.0f} tok/s", flush=True)
    record(bench, "decode tokens/s batch 1", rates, "tok/s", ">= 3000", med >= 3000, notes)
    rates = greedy_rates(engine, args.steps)
    med = sorted(rates)[1]
    print(f"decode batch 1 via step_greedy: {med:.0f} tok/s", flush=True)
    record(bench, "decode tokens/s batch 1 via engine.step_greedy (token id to host)", rates, "tok/s", ">= 2500",
           med >= 2500, notes)
    if args.only_batch1:
        return _variants(engine, args, bench, notes)
    host = decode_rates(engine, 1, args.steps // 2, host=True)
    record(bench, "decode tokens/s batch 1 via engine.step (logits to host)", host, "tok/s", notes=notes)
    for batch, target in ((64, 60000), (256, None)):
        rates = batched_rates(engine, batch, args.steps // 2)
        med = sorted(rates)[2]
        spread = (max(rates) - min(rates)) / med
        print(f"batched step, batch {batch}: {med:.0f} tok/s (5 runs, spread {spread:.1%})", flush=True)
        record(bench, f"decode tokens/s batch {batch} (batched step, tokens chosen on GPU)", rates, "tok/s",
               f">= {target}" if target else "", med >= target if target else None, bnotes)
        record(bench, f"decode batch {batch}: spread of 5 runs (max-min)/median", spread, "",
               "<= 0.10", spread <= 0.10, bnotes)
        rates = decode_rates(engine, batch, args.steps // 2)
        print(f"decode batch {batch} via step_device: {sorted(rates)[1]:.0f} tok/s", flush=True)
        record(bench, f"decode tokens/s batch {batch} via step_device (state copied in and out)", rates, "tok/s",
               notes=bnotes)
    rates = prefill_rates(engine, 2048)
    med = sorted(rates)[1]
    print(f"prefill 2048: {med:.0f} tok/s", flush=True)
    record(bench, "prefill tokens/s (2048 tokens, batch 1)", rates, "tok/s", ">= 50000", med >= 50000, notes)
    for batch in (1, 64, 256):
        rates = tpp_decode.decode_rates(config, batch, args.steps // 2)
        print(f"Transformer++ bf16 decode batch {batch}: {sorted(rates)[1]:.0f} tok/s", flush=True)
        record(bench, f"baseline: Transformer++ bf16 decode tokens/s batch {batch}", rates, "tok/s",
               notes=f"{notes.split('; batch-1')[0]}; bench/tpp_decode.py: static KV cache, position 256, CUDA graph")
    if args.profile:
        profile(engine)
        for batch in (64, 256):
            profile_batched(engine, batch)
    _variants(engine, args, bench, notes)
    if args.batched_variants:
        _batched_variants(engine, args, bench, bnotes)


if __name__ == "__main__":
    main()
