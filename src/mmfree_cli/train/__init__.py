"""Training: the accelerate trainer, LR schedules, checkpoints and the `mmfree train` entry point."""

from .run import run
from .trainer import Trainer, lm_loss

__all__ = ["run", "Trainer", "lm_loss"]
