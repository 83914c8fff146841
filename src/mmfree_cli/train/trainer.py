"""The training loop on accelerate: one class that distillation and other objectives reuse.

Each optimizer step runs `grad_accum_steps` micro-batches. The loss hook returns the *sum* of
token losses and the token count, and gradients are divided by the tokens of the whole window
(across processes), so the loss is normalised over the window however tokens are spread between
micro-batches. Then: clipping, the LR of this step (a pure function of it, see `schedules`),
the optimizer step. Periodic validation reports loss, perplexity and bits per byte; periodic
checkpoints make `--resume` continue exactly where a run stopped: the batch order is a function of
the step (see `data.blocks`) and the optimizer and RNG states come back from the checkpoint.

Subclasses or callers change the objective by passing `loss_fn(model, input_ids) -> (loss_sum, n)`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import checkpoints
from .metrics import MetricsLog
from .schedules import lr_at, weight_decay_at

LossFn = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, int]]


def lm_loss(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy summed over the block's predicted positions, and their count.
    The model computes it (on GPU without materialising the logits: see HGRNBitForCausalLM.forward)."""
    loss = model(input_ids, labels=input_ids, reduction="sum").loss
    return loss, input_ids[:, 1:].numel()


class Trainer:
    def __init__(self, recipe, run_dir: Path, model, optimizer, train_source, val_set, accelerator,
                 loss_fn: LossFn = lm_loss, eval_loss_fn: LossFn = lm_loss):
        self.recipe, self.run_dir, self.acc = recipe, run_dir, accelerator
        self.model, self.optimizer = model, optimizer
        self.train_source, self.val = train_source, val_set
        self.loss_fn, self.eval_loss_fn = loss_fn, eval_loss_fn
        self.step, self.tokens_seen = 0, 0
        self.seen_first_blocks: list[int] = []  # a fingerprint of this rank's first batch (tests, logs)
        unwrapped = accelerator.unwrap_model(model)
        if hasattr(unwrapped, "set_activation_checkpointing"):
            unwrapped.set_activation_checkpointing(recipe.train.activation_checkpointing)

    def resume(self, checkpoint: Path) -> None:
        state = checkpoints.load(self.acc, checkpoint)
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])

    def _set_hyperparameters(self) -> float:
        r = self.recipe
        lr = lr_at(self.step, r.optimizer.lr, r.train.max_steps, r.schedule)
        wd = weight_decay_at(self.step, r.optimizer.weight_decay, r.train.max_steps, r.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group.get("decay", True) else 0.0
        return lr

    def train_step(self) -> float:
        """One optimizer step; returns the window's mean token loss (over all processes)."""
        t = self.recipe.train
        self.model.train()
        accum, rank, world = t.grad_accum_steps, self.acc.process_index, self.acc.num_processes
        loss_sum = torch.zeros((), dtype=torch.float64)
        tokens = 0
        for m in range(accum):
            batch = self.train_source.batch(self.step * accum + m, t.micro_batch_size, rank, world)
            if not self.seen_first_blocks:
                self.seen_first_blocks = [int(x) for x in batch[:, :8].flatten()]
            sync = contextlib.nullcontext() if m == accum - 1 else self.acc.no_sync(self.model)
            with sync, self.acc.autocast():
                loss, n = self.loss_fn(self.model, batch.to(self.acc.device))
                self.acc.backward(loss)
            loss_sum += loss.detach().double().cpu()
            tokens += n
        totals = self.acc.reduce(torch.tensor([float(loss_sum), float(tokens)], device=self.acc.device), "sum").cpu()
        # DDP averaged the summed gradients over processes; rescale to a mean over every token of the window
        scale = world / float(totals[1])
        params = self._trained_parameters()
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
        if t.max_grad_norm:
            self.acc.clip_grad_norm_(params, t.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += int(totals[1])
        return float(totals[0] / totals[1])

    def _trained_parameters(self) -> list[torch.nn.Parameter]:
        """Everything the optimizer steps: the model and any module of the loss (e.g. a distillation projection)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss (nats per token), perplexity and bits per byte, over every process's share."""
        self.model.eval()
        blocks = self.val.blocks[self.acc.process_index::self.acc.num_processes]
        loss_sum, tokens = 0.0, 0
        for chunk in blocks.split(self.recipe.train.micro_batch_size):
            with self.acc.autocast():
                loss, n = self.eval_loss_fn(self.model, chunk.to(self.acc.device))
            loss_sum += float(loss)
            tokens += n
        totals = self.acc.reduce(torch.tensor([loss_sum, float(tokens)], device=self.acc.device), "sum").cpu()
        val_loss = float(totals[0] / totals[1])
        return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
                "val_bpb": val_loss / math.log(2) / self.val.bytes_per_token}

    def save(self) -> Path:
        return checkpoints.save(self.acc, self.model, self.run_dir, self.step,
                                {"tokens_seen": self.tokens_seen}, self.recipe.checkpoint.keep_last)

    def fit(self, log: MetricsLog, progress=None) -> dict:
        """Train from the current step to train.max_steps; returns the final validation metrics."""
        r = self.recipe
        window_loss, window_steps, window_time, window_tokens = 0.0, 0, 0.0, self.tokens_seen
        val = {}
        while self.step < r.train.max_steps:
            lr = self._set_hyperparameters()
            started = time.perf_counter()
            window_loss += self.train_step()
            window_time += time.perf_counter() - started  # training time only: no eval or saving
            window_steps += 1
            last = self.step == r.train.max_steps
            if last or (r.logging.every_steps and self.step % r.logging.every_steps == 0):
                tok_s = (self.tokens_seen - window_tokens) / max(window_time, 1e-9)
                entry = {"loss": window_loss / window_steps, "lr": lr, "tokens": self.tokens_seen, "tokens_per_s": tok_s}
                log.log(self.step, **entry)
                if progress is not None:
                    progress.update(self.step, entry)
                window_loss, window_steps, window_time, window_tokens = 0.0, 0, 0.0, self.tokens_seen
            if last or (r.eval.every_steps and self.step % r.eval.every_steps == 0):
                val = self.evaluate()
                log.log(self.step, **val)
                if progress is not None:
                    progress.validation(self.step, val)
            if last or (r.checkpoint.every_steps and self.step % r.checkpoint.every_steps == 0):
                self.save()
        return val
