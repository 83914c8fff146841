"""The `mmfree` command line: one thin function per command, the work done in plain functions.

Every command turns a `UserError` into one line on stderr and exit code 2 (see `main`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich",
                  help="mmfree: train, quantize, export, deploy and chat with MatMul-free (ternary HGRN) language models.")
console = Console()


@app.command()
def info(path: str = typer.Argument(..., help="A model/run directory, a packed .safetensors file, or a preset name (tiny, 370m, 1.3b, 2.7b).")):
    """Show a model's config, parameter counts (ternary vs float) and bytes, and whether it loads.

    Examples:
      mmfree info 370m
      mmfree info runs/latest
    """
    from .inspect import describe
    console.print(describe(path))


@app.command()
def env():
    """Show versions, devices and whether the Triton kernels can run here.

    Example:
      mmfree env
    """
    from .inspect import environment
    console.print(environment())


@app.command()
def quantize(
    model: Optional[str] = typer.Argument(None, help="Run, reference checkpoint or packed model directory (default: the newest run)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: exports/packed/<model>-<layout>)."),
    layout: str = typer.Option("i2", "--layout", "-l", help="i2 (2 bits/weight) | tq1 (1.6 bits/weight) | hf-bitnet (transformers)"),
    float_dtype: str = typer.Option("bfloat16", "--float-dtype", help="Embeddings, norms and lower bounds: bfloat16 | float16 | float32"),
):
    """Pack a model's ternary weights into a self-contained directory (packed safetensors, config, tokenizer, manifest).

    Examples:
      mmfree quantize
      mmfree quantize runs/latest --layout tq1
      mmfree quantize checkpoints/MMfreeLM-370M --layout hf-bitnet -o packed/370m-hf
    """
    from .quant.quantize import quantize as run_quantize
    from .quant.report import render
    path, report = run_quantize(model, out, layout, float_dtype)
    console.print(render(report, title=f"packed {layout} → {path}"))


@app.command()
def export(
    model: Optional[str] = typer.Argument(None, help="Run or model directory (default: the newest run, runs/latest)."),
    target: str = typer.Option(..., "--target", "-t", help="cuda | cpu | onnx | fpga"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: exports/<target>/<model>-<time>)."),
    synth: Optional[str] = typer.Option(None, help="fpga: run an open synthesis flow for ecp5 or ice40 on a small configuration."),
    bitstream: Optional[Path] = typer.Option(None, help="fpga: record a vendor-built bitstream (with its sha256) in the bundle."),
):
    """Export a model for an inference target; `exports/<target>/latest` then points at it.

    Examples:
      mmfree export --target cpu
      mmfree export runs/latest --target onnx -o exports/onnx/mine
      mmfree export --target fpga --synth ecp5
    """
    from .export import run_export
    options = {k: v for k, v in {"synth": synth, "bitstream": bitstream}.items() if v is not None}
    path = run_export(target, model, out, **options)
    console.print(f"exported [bold]{target}[/] → {path}")


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
