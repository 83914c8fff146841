"""The `mmfree` command line: one thin function per command, the work done in plain functions.

Every command turns a `UserError` into one line on stderr and exit code 2 (see `main`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import UserError
from .extras import missing_extra

# help texts are Rich markup (so examples keep their lines): a literal "[" before a lowercase
# letter or "@" is written "\\[" (org/name\\[@rev]), or Rich would take it for a tag
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="mmfree: train, quantize, export, deploy and chat with MatMul-free (ternary HGRN) language models.")
console = Console()

# the engine options of generate, chat, serve and eval, declared once (eval's --engine help differs)
EngineOption = Annotated[str, typer.Option("--engine", "-e", help="auto | torch | cuda | cpu | onnx | fpga")]
DtypeOption = Annotated[str | None, typer.Option(help="torch engine: float32 (default) | bfloat16 | float16 | float64")]
ThreadsOption = Annotated[int | None, typer.Option(min=1, help="CPU threads (default: torch's choice; the cpu engine uses one per core).")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="fpga engine: the XDMA node prefix, e.g. /dev/xdma0 (or DIR/xdma0 of `mmfree fpga-emulator`).")]


def _version(value: bool) -> None:
    if value:
        from . import __version__
        print(f"mmfree {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")):
    """mmfree: train, quantize, export, deploy and chat with MatMul-free (ternary HGRN) language models.

    Example: mmfree train recipes/tiny.yaml && mmfree chat
    """


@app.command()
def info(path: str = typer.Argument(..., help="A model/run directory, a Hub id org/name\\[@rev], a packed .safetensors file, or a preset name (tiny, 370m, 1.3b, 2.7b).")):
    """Show a model's config, parameter counts (ternary vs float) and bytes, and whether it loads.

    Examples:
      mmfree info 370m
      mmfree info runs/latest
      mmfree info ridger/MMfreeLM-370M
    """
    from .inspect import describe
    console.print(describe(path))


@app.command()
def download(model: str = typer.Argument(..., help="A Hugging Face model id, org/name or org/name@revision (branch, tag or commit).")):
    """Fetch a model from the Hugging Face Hub into its cache, so later commands (and HF_HUB_OFFLINE=1) find it by id.

    Examples:
      mmfree download ridger/MMfreeLM-370M
      mmfree download ridger/MMfreeLM-1.3B@main && HF_HUB_OFFLINE=1 mmfree chat ridger/MMfreeLM-1.3B
    """
    from .hub import fetch_model
    path = fetch_model(model, downloading=True)
    console.print(f"{model} → {path}", highlight=False, markup=False, soft_wrap=True)


@app.command(name="runs")
def runs_(root: Path = typer.Option(Path("runs"), "--dir", help="The runs directory."),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """List runs with their state (finished, running, interrupted, no weights), step, validation loss and age.

    Examples:
      mmfree runs
      mmfree runs --dir my-lm/runs --json
    """
    import json

    from rich.table import Table

    from .runs import list_runs
    runs = list_runs(root)
    latest = (root / "latest").resolve() if (root / "latest").exists() else None
    if as_json:
        print(json.dumps([{"run": str(r.path), "state": r.state, "step": r.step, "val_loss": r.val_loss,
                           "modified": r.modified, "latest": r.path.resolve() == latest} for r in runs]))
        return
    if not runs:
        console.print(f"no run in {root}/ — try `mmfree train recipes/tiny.yaml`", highlight=False, markup=False, soft_wrap=True)
        return
    table = Table("run", "state", "step", "val loss", "age")
    for r in runs:
        name = r.path.name + ("  ← latest" if r.path.resolve() == latest else "")
        table.add_row(name, r.state, "-" if r.step is None else str(r.step),
                      "-" if r.val_loss is None else f"{r.val_loss:.4f}", r.age())
    console.print(table)


@app.command()
def env():
    """Show versions, devices and whether the Triton kernels can run here.

    Example:
      mmfree env
    """
    from .inspect import environment
    console.print(environment())


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Project directory (created if missing)."),
    force: bool = typer.Option(False, "--force", help="Overwrite files that already exist."),
):
    """Scaffold a project: recipes/, accelerate/ (DDP and FSDP configs) and a README.

    Examples:
      mmfree init my-lm && cd my-lm && mmfree train recipes/tiny.yaml
      mmfree init . --force
    """
    from .scaffold import init_project
    for rel in init_project(directory, force):
        console.print(f"wrote {directory / rel}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="A recipe YAML file (see `mmfree init` or recipes/tiny.yaml)."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides: section.key=value ..."),
    resume: str | None = typer.Option(None, "--resume", help="auto (the newest unfinished run) or a run / checkpoint directory."),
):
    """Train a model from a recipe into runs/<name>/; runs/latest then points at it.

    Examples:
      mmfree train recipes/tiny.yaml
      mmfree train recipes/tiny.yaml optimizer.lr=3e-3 train.max_steps=100
      mmfree train recipes/tiny.yaml --resume auto
      accelerate launch --config_file accelerate/ddp.yaml -m mmfree_cli.cli train recipes/370m.yaml
      accelerate launch --multi_gpu --num_processes 2 -m mmfree_cli.cli train recipes/tiny.yaml  # 2 CPU processes, gloo
    """
    from .train import run
    run(recipe, overrides or [], resume, console=console)


@app.command()
def distill(
    recipe: Path = typer.Argument(..., help="A recipe with a distill: section (recipes/distill-tiny.yaml, recipes/distill-370m.yaml)."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides: section.key=value ..."),
    resume: str | None = typer.Option(None, "--resume", help="auto (the newest unfinished run) or a run / checkpoint directory."),
):
    """Distil a full-precision teacher (transformers directory or mmfree run) into the recipe's ternary student.

    With no distill.teacher, a full-precision teacher is trained first into runs/<recipe>-teacher-<hash>/ and reused later.

    Examples:
      mmfree distill recipes/distill-tiny.yaml
      mmfree distill recipes/distill-tiny.yaml distill.alpha=0.9 distill.temperature=1.0
      mmfree distill recipes/distill-370m.yaml distill.teacher=/models/my-llama --resume auto
    """
    from .train.distill import run as run_distill
    run_distill(recipe, overrides or [], resume, console=console)


@app.command()
def quantize(
    model: str | None = typer.Argument(None, help="Run, reference checkpoint or packed model directory, or a Hub id org/name\\[@rev] (default: the newest run)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: exports/packed/<model>-<layout>)."),
    layout: str = typer.Option("i2", "--layout", "-l", help="i2 (2 bits/weight) | tq1 (1.6 bits/weight) | hf-bitnet (transformers)"),
    float_dtype: str = typer.Option("bfloat16", "--float-dtype", help="Embeddings, norms and lower bounds: bfloat16 | float16 | float32"),
    embedding_dtype: str | None = typer.Option(None, "--embedding-dtype", help="The embedding table only: bfloat16 | float16 | float32 | int8 (per-row scale, ~half of bf16) (default: --float-dtype)"),
):
    """Pack a model's ternary weights into a self-contained directory (packed safetensors, config, tokenizer, manifest).

    Examples:
      mmfree quantize
      mmfree quantize runs/latest --layout tq1
      mmfree quantize runs/latest --layout tq1 --embedding-dtype int8
      mmfree quantize checkpoints/MMfreeLM-370M --layout hf-bitnet -o packed/370m-hf
    """
    from .export.packed import quantize as run_quantize
    from .export.packed_report import render
    path, report = run_quantize(model, out, layout, float_dtype, embedding_dtype=embedding_dtype)
    console.print(render(report, title=f"packed {layout} → {path}"))


@app.command()
def export(
    model: str | None = typer.Argument(None, help="Run or model directory, or a Hub id org/name\\[@rev] (default: the newest run, runs/latest)."),
    target: str = typer.Option(..., "--target", "-t", help="cuda | cpu | onnx | fpga"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: exports/<target>/<model>-<time>)."),
    synth: str | None = typer.Option(None, help="fpga: open-flow synthesis (yowasp yosys + nextpnr) of the shipped build on an ECP5-85F at speed -8 and -6, failing below 100/80 MHz (ice40 is too small for the core)."),
    bitstream: Path | None = typer.Option(None, help="fpga: record a Vivado-built bitstream after checking its .bit header, sync word and sidecar design ID (vivado/build.tcl writes FILE.json)."),
    board: str | None = typer.Option(None, "--board", help="fpga: add vivado/ (build script, block design with XDMA + DDR4, constraints, README) for this board: vcu118."),
    core_mhz: float | None = typer.Option(None, "--core-mhz", help="fpga --board: the core's clock in MHz (at most the --synth Fmax report; needed without --synth)."),
    onnx_weights: str | None = typer.Option(None, "--onnx-weights", help="onnx: nbits (MatMulNBits 2-bit, default, fastest in onnxruntime) | dq (standard INT2 DequantizeLinear, opset 25)."),
):
    """Export a model for an inference target; `exports/<target>/latest` then points at it.

    Examples:
      mmfree export --target cpu
      mmfree export runs/latest --target onnx -o exports/onnx/mine
      mmfree export --target fpga --synth ecp5
      mmfree export --target fpga --board vcu118 --synth ecp5
      mmfree export --target fpga --board vcu118 --core-mhz 100 --bitstream vivado/out/mmf_vcu118.bit
    """
    from .export import run_export
    options = {k: v for k, v in {"synth": synth, "bitstream": bitstream, "weights": onnx_weights,
                                 "board": board, "core_mhz": core_mhz}.items() if v is not None}
    path = run_export(target, model, out, **options)
    console.print(f"exported {target} → {path}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def generate(
    args: list[str] | None = typer.Argument(None, help="[MODEL] [PROMPT]: a model directory or Hub id org/name\\[@rev] (default: the newest run) and the prompt (default: stdin)."),
    engine: EngineOption = "auto",
    max_tokens: int = typer.Option(200, "--max-tokens", "-n", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy."),
    top_k: int = typer.Option(0, help="Sample from the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 = off)."),
    min_p: float = typer.Option(0.0, help="Drop tokens below min_p × the top probability (0 = off)."),
    repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeats (1 = off)."),
    seed: int = typer.Option(0, help="Random seed of the sampler."),
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeat for several)."),
    ignore_eos: bool = typer.Option(False, help="Keep going after the end-of-sequence token."),
    no_bos: bool = typer.Option(False, "--no-bos", help="No BOS before the prompt (default: BOS for HF tokenizers, none for byte-level runs, which train without it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: text, token counts, tokens/s."),
    dtype: DtypeOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    max_prompt_tokens: int = typer.Option(32768, help="Refuse longer prompts (the prompt is read in chunks; this bounds the work a pasted file can start)."),
):
    """Continue a prompt once, streaming the text as it is generated.

    Examples:
      mmfree generate "ROMEO:"
      mmfree generate runs/latest "Once upon a time" -n 100 -t 0.8 --top-p 0.95
      echo "To be, or not to be" | mmfree generate --json
      mmfree generate ridger/MMfreeLM-370M@main "The capital of France is" -n 20
      mmfree generate --max-prompt-tokens 100000 < long_document.txt
    """
    from .generate import SamplingParams, generate_command
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            min_p=min_p, repetition_penalty=repetition_penalty, seed=seed,
                            stop=tuple(stop or ()), ignore_eos=ignore_eos)
    result = generate_command(args or [], engine, params, as_json, dtype, threads, add_bos=False if no_bos else None,
                              device=device, max_prompt_tokens=max_prompt_tokens)
    if not as_json:
        Console(stderr=True).print(f"[{result['completion_tokens']} tokens, {result['tokens_per_s']:.1f} tokens/s, "
                                   f"{result['engine']}]", style="dim", highlight=False, markup=False, soft_wrap=True)


@app.command()
def chat(
    model: str | None = typer.Argument(None, help="Model directory or Hub id org/name\\[@rev] (default: the newest run)."),
    engine: EngineOption = "auto",
    template: str = typer.Option("auto", help="Chat template: auto (tokenizer, then recipe, else none) | chatml | dialogue | FILE | none (plain continuation)."),
    system: str | None = typer.Option(None, help="System message (with a chat template)."),
    max_tokens: int = typer.Option(256, "--max-tokens", "-n", help="Most tokens per answer."),
    temperature: float = typer.Option(0.7, "--temperature", "-t", help="0 = greedy."),
    top_k: int = typer.Option(0, help="Sample from the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(0.95, help="Nucleus sampling mass (1 = off)."),
    min_p: float = typer.Option(0.0, help="Drop tokens below min_p × the top probability (0 = off)."),
    repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeats (1 = off)."),
    seed: int | None = typer.Option(None, help="Seed of the conversation's random generator (default: a fresh one, shown at start); the same seed and inputs replay a conversation."),
    dtype: DtypeOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    max_prompt_tokens: int = typer.Option(32768, help="Refuse a message longer than this many tokens (the session goes on)."),
):
    """Talk to a model in the terminal; answers stream as they are generated and the conversation
    is carried in the recurrent state. Commands: /retry /reset /save /load /params /help /exit.

    Examples:
      mmfree chat
      mmfree chat runs/latest --template none -t 0.8 --seed 7
      mmfree chat ridger/MMfreeLM-370M                  # a Hub id (fetched once into the Hugging Face cache)
      mmfree chat checkpoints/MMfreeLM-370M --template dialogue --system "You are terse."
      mmfree chat --max-prompt-tokens 100000
    """
    import secrets

    from .chat import chat_command
    from .generate import SamplingParams
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                            min_p=min_p, repetition_penalty=repetition_penalty,
                            seed=secrets.randbelow(2**31) if seed is None else seed)
    chat_command(model, engine, template, params, system, dtype, threads, device, max_prompt_tokens)


@app.command()
def serve(
    model: str | None = typer.Argument(None, help="Model directory or Hub id org/name\\[@rev] (default: the newest run)."),
    engine: EngineOption = "auto",
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", "-p"),
    template: str = typer.Option("auto", help="Chat template for /v1/chat/completions: auto | chatml | dialogue | FILE."),
    model_name: str | None = typer.Option(None, help="The model id clients use (default: the directory name)."),
    max_batch: int = typer.Option(8, help="Requests decoded together; more wait in a queue."),
    max_tokens: int = typer.Option(2048, help="Most tokens one request may generate."),
    dtype: DtypeOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    api_key: str | None = typer.Option(None, "--api-key", envvar="MMFREE_API_KEY", show_envvar=True, help="Require `Authorization: Bearer KEY` on /v1/ (401 otherwise)."),
    allowed_host: list[str] | None = typer.Option(None, "--allowed-host", help="A Host name to serve besides localhost and IP addresses (repeatable; * = any): guards against DNS rebinding."),
    max_prompt_tokens: int = typer.Option(32768, help="Most prompt tokens one request may send."),
    max_body_bytes: int = typer.Option(4 << 20, help="Largest request body in bytes (413 above it)."),
    max_stop_chars: int = typer.Option(256, help="Longest stop string a request may send."),
    prefill_chunk: int = typer.Option(64, help="Prompt tokens read per step while others decode (bounds how long one prompt delays the rest)."),
):
    """Serve a model over an OpenAI-compatible HTTP API: /v1/models, /v1/completions,
    /v1/chat/completions (with streaming), /health.

    Examples:
      mmfree serve
      mmfree serve runs/latest --port 8080 --max-batch 16
      MMFREE_API_KEY=secret mmfree serve --host 0.0.0.0 --allowed-host llm.example.org
      curl localhost:8000/v1/completions -H 'Content-Type: application/json' -d '{"model": "MODEL_ID", "prompt": "ROMEO:", "max_tokens": 50}'
      (MODEL_ID: the model directory's name, as printed at start and listed by /v1/models)
    """
    from .serve import Limits, serve_command
    limits = Limits(max_tokens=max_tokens, max_prompt_tokens=max_prompt_tokens, max_body_bytes=max_body_bytes,
                    max_stop_chars=max_stop_chars, prefill_chunk=prefill_chunk)
    serve_command(model, engine, host, port, template, model_name, max_batch, max_tokens, dtype, threads, device,
                  api_key or "", allowed_host, limits)


@app.command(name="eval")
def eval_(
    model: str | None = typer.Argument(None, help="Run, packed or export directory, or a Hub id org/name\\[@rev] (default: the newest run; with a named engine, its newest export)."),
    data: str | None = typer.Option(None, "--data", help="Held-out text: a UTF-8 file, a .jsonl/.parquet file, a Hub dataset NAME[:CONFIG] (cached or reachable), or 'embedded' (the last 10% of the embedded corpus; the default without --tasks)."),
    tasks: str | None = typer.Option(None, "--tasks", help="lm-evaluation-harness tasks, comma-separated: names (arc_easy,arc_challenge,hellaswag,openbookqa,piqa,winogrande) or task YAML files."),
    include_path: list[Path] | None = typer.Option(None, "--include-path", help="A directory of task YAML files for --tasks (repeatable)."),
    compare: bool = typer.Option(False, "--compare", help="Hold an engine (default: the integer cpu engine) against the float model: top-1 agreement and both perplexities."),
    engine: str = typer.Option("auto", "--engine", "-e", help="auto | torch | cuda | cpu | onnx | fpga (--compare: the engine compared with the float model, default cpu)."),
    context: int | None = typer.Option(None, help="Tokens per window, each from a zero state (--data default 0: the whole text as one stream through the recurrent state; --compare default 128)."),
    max_tokens: int | None = typer.Option(None, help="Most held-out tokens to evaluate (--data default 0: all; --compare default 4096)."),
    split: str = typer.Option("test", help="--data DATASET: the split to read."),
    text_field: str = typer.Option("text", help="--data DATASET/JSONL: the column holding the text."),
    limit: int | None = typer.Option(None, help="--tasks: at most this many examples per task."),
    num_fewshot: int | None = typer.Option(None, help="--tasks: few-shot examples (default: the task's, zero for the paper's suite)."),
    batch_size: int = typer.Option(8, help="Sequences per engine call."),
    dtype: DtypeOption = None,
    threads: ThreadsOption = None,
    device: DeviceOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Evaluate a model: perplexity, bits per byte and top-1 on held-out text (--data), the paper's
    zero-shot suite through lm-evaluation-harness (--tasks), or the integer engine's drift from the
    float model (--compare).

    Examples:
      mmfree eval                      # the newest run on the embedded held-out text
      mmfree eval runs/latest --data held_out.txt --engine cpu --json
      mmfree eval --tasks arc_easy,arc_challenge,hellaswag,openbookqa,piqa,winogrande
      mmfree eval --tasks my_tasks/qa.yaml --limit 100      # a local task file, offline
      mmfree eval --compare
      mmfree eval runs/latest --compare --data held_out.txt --max-tokens 20000 --json
    """
    import json
    if compare:
        from .fidelity import compare as compare_engines
        from .paths import resolve_model
        engine = "cpu" if engine == "auto" else engine
        report = compare_engines(resolve_model(model), engine, None if data in (None, "embedded") else Path(data),
                                 128 if context is None else context, 4096 if max_tokens is None else max_tokens)
        if as_json:
            print(json.dumps(report))
            return
        console.print(f"{report['tokens']} held-out tokens, windows of {report['context']}: "
                      f"perplexity float {report['ppl_float']:.4f}, {engine} {report['ppl_engine']:.4f} "
                      f"({100 * report['ppl_delta']:+.2f}%), top-1 agreement {100 * report['top1_agreement']:.2f}%")
        return
    from .evaluate import evaluate, render
    report = evaluate(model, engine, data, [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None,
                      include_path, context or 0, max_tokens or 0, split, text_field, limit, num_fewshot,
                      batch_size, {"dtype": dtype, "threads": threads, "device": device})
    if as_json:
        print(json.dumps(report))
        return
    for line in render(report):
        console.print(line, highlight=False, soft_wrap=True)


@app.command(name="bench")
def bench_(
    model: str | None = typer.Argument(None, help="Run or packed model directory, or a Hub id (default: the newest run)."),
    engines: str | None = typer.Option(None, "--engines", help="Comma-separated engines (default: torch,cpu,onnx, and cuda with a GPU)."),
    prefill_tokens: int = typer.Option(128, help="Prompt length of the prefill figure."),
    decode_tokens: int = typer.Option(32, help="Batch-1 decode steps timed per repeat."),
    repeats: int = typer.Option(3, help="Repeats per figure (the median is shown)."),
    bandwidth: float | None = typer.Option(None, help="Memory bandwidth in GB/s for the bound (default: measured here)."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for every engine (default: each engine's choice)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also write the figures as a PNG bar chart to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
):
    """Benchmark engines side by side on one model: prefill and decode tokens/s, memory, and
    decode speed as a % of the memory-bandwidth bound.

    Examples:
      mmfree bench
      mmfree bench runs/latest --engines torch,cpu,cuda,onnx --plot bench.png
      mmfree bench --engines cpu --decode-tokens 128 --bandwidth 25 --json
    """
    import json

    from .benchmark import bench, table
    from .benchmark import plot as plot_report
    report = bench(model, engines, prefill_tokens, decode_tokens, repeats, bandwidth, threads)
    if plot is not None:
        report["plot"] = str(plot_report(report, plot))
    if as_json:
        print(json.dumps(report))
        return
    console.print(table(report))
    if plot is not None:
        console.print(f"wrote {report['plot']}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def deploy(
    bundle: Path | None = typer.Argument(None, help="FPGA bundle directory (default: the newest, exports/fpga/latest)."),
    device: str = typer.Option(..., "--device", "-d", help="XDMA node prefix: /dev/xdma0 means /dev/xdma0_user, _h2c_0, _c2h_0, _events_0."),
    force: bool = typer.Option(False, "--force", help="Deploy even when the card's design ID differs from the bundle's."),
    program: str | None = typer.Option(None, "--program", help="Run this programming tool first ({bitstream} = the bundle's XDMA-capable bitstream)."),
    selftest_steps: int | None = typer.Option(None, "--selftest-steps", help="Golden decode steps to run (default: all in the bundle)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the card to finish one step."),
    wait: str = typer.Option("irq", "--wait", help="irq (block on _events_0) | poll (read STATUS)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
):
    """Upload an FPGA bundle to a card over XDMA, verify it by readback and run its golden self-test.

    The card must already hold the bundle's design (XDMA cannot program an FPGA); deploy checks the design ID and refuses on a mismatch.

    Examples:
      mmfree deploy --device /dev/xdma0
      mmfree deploy exports/fpga/latest --device /dev/xdma0 --json
      mmfree fpga-emulator start /tmp/card &  mmfree deploy --device /tmp/card/xdma0
    """
    import json

    from .deploy.deploy import deploy as run_deploy
    say = (lambda line: None) if as_json else (lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
    report = run_deploy(bundle, device, force, program, selftest_steps, timeout, wait, say)
    if as_json:
        print(json.dumps(report))


emulator_app = typer.Typer(no_args_is_help=True, help="An emulated mmfree card behind XDMA-like nodes (FUSE), for tests and demos.")
app.add_typer(emulator_app, name="fpga-emulator")


@emulator_app.command("start")
def fpga_emulator_start(
    directory: Path = typer.Argument(..., help="Empty directory to mount the nodes in (DIR/xdma0_user, ...)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="The bundle whose design the card holds (default: exports/fpga/latest)."),
    name: str = typer.Option("xdma0", "--name", help="Node prefix inside DIR."),
    memory: int | None = typer.Option(None, "--memory", help="Card memory bytes (default: what the bundle needs, rounded up to 1 MiB)."),
    design_id: str | None = typer.Option(None, "--design-id", help="Report this DESIGN_ID instead of the bundle's (hex)."),
    fault: list[str] | None = typer.Option(None, "--fault", help="Inject a fault: hang | no-access | flip-bit:ADDR (repeatable)."),
    connect: str | None = typer.Option(None, "--connect", help="Serve a card server at this Unix socket (e.g. the RTL simulation) instead of the golden machine."),
):
    """Mount an emulated card (bit-exact golden machine) in DIR and serve it in the foreground; Ctrl-C unmounts.

    Examples:
      mmfree fpga-emulator start /tmp/card
      mmfree fpga-emulator start /tmp/card --bundle exports/fpga/latest --fault hang
    """
    from .deploy.emulator import start
    start(directory, bundle, name, memory, design_id, fault or [], connect)


def print_error(error: Exception, console: Console | None = None) -> None:
    """`error: MESSAGE` on stderr; the message is plain text (a hint like
    `pip install 'mmfree-cli[eval]'` keeps its brackets: it is never read as Rich markup)."""
    from rich.text import Text
    (console or Console(stderr=True)).print(Text.assemble(("error:", "bold red"), " ", str(error)),
                                            highlight=False, soft_wrap=True)


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as e:
        print_error(e)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:  # an optional extra (onnx, serve, cpu, fpga) not installed
        hint = missing_extra(e)
        if hint is None:
            raise
        print_error(hint)
        sys.exit(hint.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except OSError as e:  # a full disk, a read-only or forbidden path, ...: one line, not a traceback
        from .oserrors import describe
        line = describe(e)
        if line is None:
            raise
        Console(stderr=True).print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        # usage errors: click's, or those of the copy of click that typer ≥ 0.26 carries inside
        # (typer._click), which click's classes do not match
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
