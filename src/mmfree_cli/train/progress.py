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
