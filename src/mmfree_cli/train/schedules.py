"""Learning-rate and weight-decay schedules as pure functions of the step.

    lr(step) = peak · warm-up ramp · decay (cosine | linear | constant down to min_lr_ratio)
               · cut_factor once step ≥ cut_at · max_steps

The cut is the ternary-training recipe of Zhu et al. (2024): a larger peak LR that is cut sharply
at mid-training (ternary weights tolerate, and need, a large early LR), optionally with weight
decay switched off for the second stage. Being functions of the step, the schedule needs no
saved state: a resumed run recomputes it.
"""

from __future__ import annotations

import math


def lr_at(step: int, peak: float, max_steps: int, schedule) -> float:
    """The LR for optimizer step `step` (0-based) of `max_steps`, per the recipe's `schedule` section."""
    s = schedule
    if s.warmup_steps and step < s.warmup_steps:
        return peak * (step + 1) / s.warmup_steps * _cut(step, max_steps, s)
    span = max(max_steps - 1 - s.warmup_steps, 1)
    progress = min(max(step - s.warmup_steps, 0) / span, 1.0)
    if s.kind == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    elif s.kind == "linear":
        decay = 1 - progress
    else:
        decay = 1.0
    ratio = s.min_lr_ratio + (1 - s.min_lr_ratio) * decay
    return peak * ratio * _cut(step, max_steps, s)


def _cut(step: int, max_steps: int, schedule) -> float:
    if schedule.cut_at is not None and step >= schedule.cut_at * max_steps:
        return schedule.cut_factor
    return 1.0


def weight_decay_at(step: int, base: float, max_steps: int, schedule) -> float:
    if schedule.cut_at is not None and schedule.weight_decay_after_cut is not None \
            and step >= schedule.cut_at * max_steps:
        return schedule.weight_decay_after_cut
    return base
