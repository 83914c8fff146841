"""The training progress display: a rich bar with step, loss, tokens/s and ETA on a terminal,
plain lines otherwise (logs, CI), and one line per validation pass either way."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_steps: int, start_step: int, enabled: bool, console: Console | None = None):
        self.console = console or Console(stderr=False)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._bar = None
        if self.live:
            self._bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tok_s]} tok/s"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, loss="-", tok_s="-")

    def __enter__(self) -> TrainProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, step: int, entry: dict) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{entry['loss']:.4f}", tok_s=f"{entry['tokens_per_s']:,.0f}")
        elif self.enabled:
            print(f"step {step}  loss {entry['loss']:.4f}  lr {entry['lr']:.2e}  {entry['tokens_per_s']:,.0f} tok/s",
                  flush=True, file=sys.stdout)

    def validation(self, step: int, val: dict) -> None:
        if self.enabled:
            self.console.print(f"step {step}  val_loss {val['val_loss']:.4f}  ppl {val['val_ppl']:.2f}  "
                               f"bits/byte {val['val_bpb']:.3f}", highlight=False)


CPU_PARAMETERS_WARNING = 50_000_000
"""Above this many parameters a CPU training run is called out as very slow (tiny.yaml has ~1M)."""


def training_bytes(parameters: int, recipe) -> int:
    """An estimate of training memory: 16 bytes a parameter (fp32 weights, gradients, two AdamW
    moments) plus activations, assumed ~24 floats per token, layer and hidden unit, plus 3 copies
    of the logits per token. Only meant for the large-for-this-device warning."""
    from ..recipe import model_config
    config = model_config(recipe)
    tokens = recipe.train.micro_batch_size * recipe.data.seq_len
    activations = 4 * tokens * (24 * config.hidden_size * config.num_hidden_layers + 3 * config.vocab_size)
    return 16 * parameters + activations


def device_memory(device) -> tuple[int | None, str]:
    """(bytes available for training on `device`, its description)."""
    import torch
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return props.total_memory, f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    threads = torch.get_num_threads()
    memory = f", {available / 2**30:.1f} GiB available" if available else ""
    return available, f"cpu ({threads} thread{'s' if threads > 1 else ''}{memory})"


def size_warning(parameters: int, recipe, device) -> str | None:
    """A warning when the recipe's model is large for `device`, or None."""
    need = training_bytes(parameters, recipe)
    available, _ = device_memory(device)
    millions = parameters / 1e6
    if available and need > 0.8 * available:
        return (f"warning: training {millions:,.0f}M parameters needs about {need / 2**30:.1f} GiB (an estimate: "
                f"weights, gradients, AdamW state and activations) but {device.type} has {available / 2**30:.1f} GiB "
                "— expect swapping or an out-of-memory stop; lower train.micro_batch_size / data.seq_len, or use "
                "a smaller recipe (recipes/tiny.yaml)")
    if device.type == "cpu" and parameters > CPU_PARAMETERS_WARNING:
        return (f"warning: {millions:,.0f}M parameters on the CPU — each step will take a long time (the "
                "released-size recipes are meant for GPUs); recipes/tiny.yaml is the CPU-sized recipe")
    return None


def header_lines(recipe, run_dir, model, acc, resumed_step: int | None) -> list[str]:
    """What a run is about to do, printed before its first step."""
    counts = model.num_parameters()
    c = model.config
    _, device = device_memory(acc.device)
    t = recipe.train
    per_step = t.micro_batch_size * t.grad_accum_steps * acc.num_processes * recipe.data.seq_len
    start = f"resuming at step {resumed_step}" if resumed_step is not None else "from step 0"
    every = recipe.checkpoint.every_steps
    return [f"run      {run_dir}",
            f"model    {counts['total'] / 1e6:.2f}M parameters ({counts['ternary'] / 1e6:.2f}M ternary), "
            f"{c.num_hidden_layers} layers × {c.hidden_size}, vocab {c.vocab_size}"
            + ("" if c.ternary else ", full precision"),
            f"data     {recipe.data.source}, blocks of {recipe.data.seq_len} tokens, tokenizer {recipe.tokenizer.name}",
            f"device   {device}, {acc.num_processes} process(es), mixed precision {acc.mixed_precision}",
            f"steps    {t.max_steps} × {per_step:,} tokens, {start}; checkpoint "
            + (f"every {every} steps" if every else "at the end") + f", validation every {recipe.eval.every_steps}"]
