"""`mmfree eval`: how well a model predicts held-out text, and the paper's zero-shot task suite.

Held-out text (`--data`): perplexity, bits per byte and top-1 accuracy with any engine. Every
token of the text is predicted exactly once: each window (or, with `context=0`, the whole text
as one stream carried through the recurrent state) starts from a zero state and a start token
(BOS for HF tokenizers, EOS for byte-level runs, as `mmfree generate` starts a document).
Bits per byte divide the total negative log-likelihood by ln 2 and by the UTF-8 bytes of the
scored text, so models with different tokenizers compare on one scale.

Tasks (`--tasks`): lm-evaluation-harness through `harness.EngineLM`. Names are the harness's
registered tasks (the paper's suite: arc_easy, arc_challenge, hellaswag, openbookqa, piqa,
winogrande) or paths of local task YAML files; `include_path` adds a directory of them. Offline
use needs the datasets in the local cache or task files that point at local data.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .engines.base import Engine
from .errors import UserError
from .scoring import text_metrics

PAPER_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "openbookqa", "piqa", "winogrande")
"""The zero-shot suite of Zhu et al. 2024, table 1."""

TEXT_SUFFIXES = {".txt", ".text", ".md"}
RECORD_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_text(data: str | Path | None, split: str = "test", text_field: str = "text") -> str:
    """The text `--data` names: None or "embedded" (the tail of the embedded corpus, the tiny
    recipe's validation part), a UTF-8 text file, a local .jsonl/.json/.parquet file (records'
    `text_field`, joined by blank lines), or a Hub dataset "name[:config]" (its `split`)."""
    from .fidelity import held_out_text
    if data is None or str(data) == "embedded":
        return held_out_text(None)
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() in RECORD_SUFFIXES:
        return _records_text(RECORD_SUFFIXES[path.suffix.lower()], {"data_files": str(path)}, "train",
                             text_field, str(path))
    if path.is_file() or path.suffix.lower() in TEXT_SUFFIXES or str(data).startswith((".", "/", "~")):
        return held_out_text(path)
    name, _, config = str(data).partition(":")
    return _records_text(name, {"name": config or None}, split, text_field, str(data))


def _records_text(builder: str, kwargs: dict, split: str, text_field: str, what: str) -> str:
    import datasets
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(builder, split=split, **kwargs)
    except (ConnectionError, FileNotFoundError, ValueError) as e:
        raise UserError(f"--data {what}: cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:160]}) — "
                        "give a local text/JSONL file, or a Hub dataset that is cached (or reachable)") from None
    except Exception as e:  # datasets raises several unrelated types for "not found" / "offline"
        if any(k in type(e).__name__ for k in ("NotFound", "Offline", "Connection", "Hub")):
            raise UserError(f"--data {what}: not available ({type(e).__name__}) — check the name and the "
                            "network, or give a local text/JSONL file") from None
        raise
    if text_field not in ds.column_names:
        raise UserError(f"--data {what}: no column {text_field!r} (columns: {', '.join(ds.column_names)}) "
                        "— pick one with --text-field")
    return "\n\n".join(t for t in ds[text_field] if t)


def run_tasks(engine: Engine, tasks: list[str], include_path: list[Path] | None = None,
              limit: int | None = None, num_fewshot: int | None = None, batch: int = 16,
              log_samples: bool = False) -> dict[str, Any]:
    """Run lm-evaluation-harness `tasks` on `engine` → the harness's results dict
    (`results[task]` holds acc, acc_norm, ...; `samples` too when `log_samples`)."""
    specs = [_task_spec(t) for t in tasks]
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--tasks needs lm-evaluation-harness — pip install 'mmfree-cli[eval]' (or lm_eval)") from None
    from .harness import EngineLM
    paths = [str(p) for p in include_path or []]
    # indexing the harness's thousands of built-in task files takes ~20 s: only when a name needs it
    named = any(not spec.endswith((".yaml", ".yml")) for spec in specs)
    manager = TaskManager(include_path=paths or None, include_defaults=named or not paths and not specs)
    try:
        return lm_eval.simple_evaluate(model=EngineLM(engine, batch_size=batch), tasks=specs,
                                       num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                                       log_samples=log_samples, bootstrap_iters=0)
    except KeyError as e:
        raise UserError(f"unknown task ({e.args[0] if e.args else e}) — give harness task names "
                        f"(e.g. {','.join(PAPER_TASKS)}) or task YAML files") from None
    except (ConnectionError, FileNotFoundError) as e:
        raise UserError(f"--tasks: a task's data is not available ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]}) — connect to the network once to cache it, "
                        "or use task files that point at local data") from None


def _task_spec(task: str) -> str:
    if task.endswith((".yaml", ".yml")):
        path = Path(task).expanduser()
        if not path.is_file():
            raise UserError(f"{task}: task file not found — give a task YAML file or a harness task name")
        return str(path.resolve())
    return task


def task_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task: its name, sample count and the harness's headline metrics."""
    rows = []
    for task, metrics in results.get("results", {}).items():
        row: dict[str, Any] = {"task": task, "samples": results.get("n-samples", {}).get(task, {}).get("effective")}
        for key, value in metrics.items():
            name, comma, _ = key.partition(",")  # metric keys are "<metric>,<filter>"
            if comma and isinstance(value, (int, float)) and not name.endswith("_stderr"):
                row[name] = value
        rows.append(row)
    return rows


def evaluate(model: str | None, engine_name: str = "auto", data: str | None = None,
             tasks: list[str] | None = None, include_path: list[Path] | None = None,
             context: int = 0, max_tokens: int = 0, split: str = "test", text_field: str = "text",
             limit: int | None = None, num_fewshot: int | None = None, batch: int = 8,
             engine_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`mmfree eval --data/--tasks`: load MODEL (default: the newest run) into an engine and
    report text metrics and/or task scores as one JSON-ready dict (with neither: --data embedded)."""
    from .generate import open_engine
    if not data and not tasks:
        data = "embedded"  # the held-out tail of the embedded corpus: a first look with no flags
    options = engine_options or {}
    engine, path = open_engine(model, engine_name, options.get("dtype"), options.get("threads"),
                               options.get("device"))
    report: dict[str, Any] = {"model": str(Path(path).resolve()), **engine.describe()}
    if data:
        text = load_text(data, split, text_field)
        with token_progress() as progress:
            report["text"] = {"data": str(data), **text_metrics(engine, text, context, max_tokens, batch,
                                                                progress=progress)}
    if tasks:
        results = run_tasks(engine, tasks, include_path, limit, num_fewshot, batch)
        report["tasks"] = task_table(results)
    return report


@contextlib.contextmanager
def token_progress():
    """A progress bar on stderr while held-out tokens are scored (only on a terminal: logs and
    --json output stay clean); yields the `progress(done, total)` callback."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("eval", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def render(report: dict[str, Any]) -> list[str]:
    """Human-readable lines for a report of `evaluate`."""
    lines = [f"{report['model']} on the {report['engine']} engine"]
    text = report.get("text")
    if text:
        how = "one stream" if text["context"] == 0 else f"windows of {text['context']}"
        lines.append(f"{text['data']}: {text['tokens']} tokens ({text['bytes']} bytes, {how}): "
                     f"perplexity {text['perplexity']:.4f}, {text['bits_per_byte']:.4f} bits/byte, "
                     f"top-1 {100 * text['top1']:.2f}%")
    for row in report.get("tasks", []):
        scores = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("task", "samples"))
        lines.append(f"{row['task']} ({row['samples']} samples): {scores}")
    return lines
