"""llama.cpp's ternary types beside the CPU engine: GGUF files with our ternary weight count, timed.

The peer a user would pick instead of `--engine cpu` is llama.cpp with a ternary type: TQ2_0
(2.06 bits a weight) or TQ1_0 (1.69). llama.cpp runs no HGRN model, so the comparison model is
Llama-shaped with exactly the ternary weights of ours, matrix for matrix: per layer four d x d
projections (q, k, v, o where we have i, f, g, o), gate and up d -> I (our gate_proj's two
halves), down I -> d, and the output head V x d, all in the ternary type; the token embedding in
F16 (ours is int32 and read one row a token). At batch-1 decode over a short context a Llama step
reads the same matrices as ours, so tokens/s compare the two products.

The weights are random ternary values times one scale (the speed of a product does not depend on
them); the vocabulary is placeholder tokens (llama-bench feeds random ids). Files are written once
to --cache-dir (atomically) and reused.

llama.cpp is found as `llama-bench` on PATH or $LLAMA_BENCH; without it this prints one line and
records nothing. Build it from any llama.cpp source with cmake (`cmake -B build && cmake --build
build --target llama-bench`); llama.cpp's code is never part of this repository.

    python -m bench.peer_llamacpp --threads 1 2      # llama.cpp alone
    python -m bench.cpu_decode                       # the engine and llama.cpp, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

TYPES = ("TQ2_0", "TQ1_0")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfree" / "peer"


def find_llama_bench() -> str | None:
    """The llama-bench executable ($LLAMA_BENCH, else on PATH), or None."""
    path = os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
    return path if path and os.access(path, os.X_OK) else None


MISSING = ("llama.cpp comparison skipped: no llama-bench (put it on PATH or set LLAMA_BENCH=/path/to/"
           "llama-bench; build it with cmake from any llama.cpp source)")


def ternary_weight_count(d: int, inner: int, layers: int, vocab: int) -> int:
    return layers * (4 * d * d + 3 * d * inner) + vocab * d


def write_gguf(path: Path, qtype: str, d: int, inner: int, layers: int, vocab: int, seed: int = 0) -> Path:
    """A Llama-shaped GGUF with ternary_weight_count(...) weights in `qtype` (see the module
    docstring), written to a temporary file and renamed into place."""
    import gguf
    from gguf import quants
    kind = gguf.GGMLQuantizationType[qtype]
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(d)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inner)
    heads = max(1, d // 64)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(d // heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(vocab)
    writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{qtype}"]))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([int(gguf.TokenType.NORMAL)] * vocab)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def ternary(name: str, rows: int, cols: int) -> None:
        w = (rng.integers(-1, 2, (rows, cols), dtype=np.int8) * np.float32(0.02)).astype(np.float32)
        writer.add_tensor(name, quants.quantize(w, kind), raw_dtype=kind)

    def ones(name: str) -> None:
        writer.add_tensor(name, np.ones(d, dtype=np.float32))

    writer.add_tensor("token_embd.weight", (rng.standard_normal((vocab, d)) * 0.02).astype(np.float16))
    for layer in range(layers):
        block = f"blk.{layer}"
        ones(f"{block}.attn_norm.weight")
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            ternary(f"{block}.{proj}.weight", d, d)
        ones(f"{block}.ffn_norm.weight")
        ternary(f"{block}.ffn_gate.weight", inner, d)
        ternary(f"{block}.ffn_up.weight", inner, d)
        ternary(f"{block}.ffn_down.weight", d, inner)
    ones("output_norm.weight")
    ternary("output.weight", vocab, d)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return path


def gguf_file(qtype: str, d: int, inner: int, layers: int, vocab: int, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The cached comparison model for these sizes, written on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"llama-ternary-{qtype}-{layers}x{d}-i{inner}-v{vocab}.gguf"
    return path if path.exists() else write_gguf(path, qtype, d, inner, layers, vocab)


def decode_tokens_per_s(llama_bench: str, model: Path, threads: int, tokens: int = 32,
                        repeats: int = 3) -> list[float]:
    """llama-bench's batch-1 generation speed (tg`tokens`, no prompt), one figure per repetition."""
    cmd = [llama_bench, "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(threads),
           "-r", str(repeats), "-o", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    (result,) = json.loads(done.stdout)
    return [float(v) for v in result["samples_ts"]]


def build_info(llama_bench: str) -> str:
    """llama.cpp's commit and CPU features as llama-bench reports them (empty where it cannot)."""
    done = subprocess.run([llama_bench, "--version"], capture_output=True, text=True, timeout=60)
    return " ".join((done.stdout + done.stderr).split())[:120]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="example: python -m bench.peer_llamacpp --threads 1 2 --tokens 32")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per repetition")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = ap.parse_args()
    llama_bench = find_llama_bench()
    if llama_bench is None:
        print(MISSING)
        return
    d, inner, vocab = 1024, 2816, 32000
    print(f"{ternary_weight_count(d, inner, args.layers, vocab):,} ternary weights; {build_info(llama_bench)}")
    for qtype in TYPES:
        model = gguf_file(qtype, d, inner, args.layers, vocab, args.cache_dir)
        for threads in args.threads:
            tps = decode_tokens_per_s(llama_bench, model, threads, args.tokens)
            print(f"{qtype} {threads} thread(s): {np.median(tps):.1f} tokens/s ({min(tps):.1f}..{max(tps):.1f})")


if __name__ == "__main__":
    main()
