"""What a run records as it trains: metrics.jsonl, TensorBoard events and, at the end, loss.png.

Only the main process logs. `metrics.jsonl` is one JSON object a line: training entries carry
`loss`, `lr`, `tokens`, `tokens_per_s`; validation entries `val_loss`, `val_ppl`, `val_bpb`. On
resume, entries past the checkpoint's step are dropped, so the file reads as one clean run.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_path, write_text

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
TB_DIR = "tensorboard"


class MetricsLog:
    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None = None):
        self.run_dir, self.enabled = run_dir, enabled
        self.path = run_dir / METRICS_FILE
        self._tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_text(self.path, "".join(line + "\n" for line in kept))
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(run_dir / TB_DIR), purge_step=resume_step)

    def log(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key.replace("val_", "val/") if key.startswith("val_") else f"train/{key}", value, step)

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def close(self, plot: bool) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
        if plot:
            plot_losses(self.entries(), self.run_dir / PLOT_FILE)


def plot_losses(entries: list[dict], path: Path) -> None:
    """Train and validation loss against step, written atomically as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    val = [(e["step"], e["val_loss"]) for e in entries if "val_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
