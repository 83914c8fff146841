"""`mmfree distill`: a full-precision teacher into a ternary MatMul-free student, on the trainer.

    loss = (1 - α)·CE(student, next token) + α·T²·KL(softmax(z_t / T) ‖ softmax(z_s / T))
           [+ β·MSE(P·h_s, h_t), P a learned projection from the student's width to the teacher's]

(Hinton et al. 2015: the T² keeps the soft term's gradients on the scale of the hard term's.) The
run is an ordinary `train.run` with this objective in place of next-token CE, so accelerate,
resume, checkpoints, progress, metrics and plots are the trainer's own. The logged training `loss`
is this objective per token; `val_loss` stays plain CE, so distilled and CE-only runs compare directly. When the recipe names no teacher, one
is trained first (this recipe, model.ternary=false, distill.teacher_recipe laid over it) into
`<output_dir>/<recipe name>-teacher-<hash of its recipe>/` and reused by later distillations
that would train the same teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import load_safetensors, save_safetensors, write_text
from ..recipe import Recipe, _merge, load_recipe, recipe_from_dict
from .teacher import Teacher, check_vocabulary, load_teacher


class _ChunkedDistillLoss(torch.autograd.Function):
    """Sum over positions of (1-α)·CE + α·T²·KL, in fp32, `chunk` positions at a time.

    The gradient is written chunk by chunk during forward (dL/dz = (1-α)(softmax(z) - onehot)
    + α·T·(softmax(z/T) - p_t)), so memory is one gradient the size of the logits plus one fp32
    chunk, not several fp32 copies of the whole [N, V] logits for autograd.
    """

    @staticmethod
    def forward(ctx, student, teacher, targets, alpha: float, temperature: float, chunk: int):
        grad = torch.empty_like(student)
        parts = torch.zeros(2, dtype=torch.float64, device=student.device)  # CE sum, KL sum
        t = temperature
        for s in range(0, student.shape[0], chunk):
            z = student[s:s + chunk].float()
            log_p = z.log_softmax(-1)
            picked = targets[s:s + chunk, None]
            ce = -log_p.gather(-1, picked).sum()
            log_q = (z / t).log_softmax(-1)
            log_pt = (teacher[s:s + chunk].float() / t).log_softmax(-1)
            p_t = log_pt.exp()
            kl = (p_t * (log_pt - log_q)).sum()
            parts += torch.stack([ce, kl]).double()
            g = log_p.exp_().mul_(1 - alpha)
            g.scatter_add_(-1, picked, torch.full(picked.shape, alpha - 1, dtype=g.dtype, device=g.device))
            g += (log_q.exp_() - p_t).mul_(alpha * t)
            grad[s:s + chunk] = g
        ctx.save_for_backward(grad)
        loss = ((1 - alpha) * parts[0] + alpha * t * t * parts[1]).float()
        ctx.mark_non_differentiable(parts)
        return loss, parts

    @staticmethod
    def backward(ctx, grad_loss, _grad_parts):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 alpha: float, temperature: float, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """student, teacher: [N, V] logits; targets: [N] ids → (loss summed over N, [CE sum, KL sum] float64)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} logits differ")
    return _ChunkedDistillLoss.apply(student_logits, teacher_logits.detach(), targets, alpha, temperature, chunk)


class LogitCache:
    """Teacher logits of each training block on disk (float16, checksummed), keyed by the block's tokens."""

    def __init__(self, root: Path, teacher: Teacher):
        self.dir = root / teacher.fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, row: torch.Tensor) -> Path:
        return self.dir / f"{hashlib.sha256(row.cpu().numpy().tobytes()).hexdigest()}.safetensors"

    def logits(self, input_ids: torch.Tensor, teacher: Teacher) -> torch.Tensor:
        paths = [self._path(row) for row in input_ids]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            fresh, _ = teacher.logits_and_hidden(input_ids[missing])
            for i, row in zip(missing, fresh.half().cpu()):
                save_safetensors({"logits": row}, paths[i])
        # every logit goes through float16, cached or not, so a resumed run sees the same targets
        return torch.stack([load_safetensors(p)[0]["logits"] for p in paths])


class DistillObjective:
    """The trainer's loss hook: `(model, input_ids) -> (loss summed over predicted positions, their count)`."""

    def __init__(self, teacher: Teacher, settings, vocab: int, device: torch.device,
                 projection: torch.nn.Module | None, cache: LogitCache | None):
        self.teacher, self.s, self.vocab, self.device, self.cache = teacher, settings, vocab, device, cache
        self.modules = [projection] if projection is not None else []
        self.last_parts = torch.zeros(2, dtype=torch.float64)  # CE and KL sums of the last call

    def __call__(self, model, input_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        s = self.s
        want_hidden = s.hidden_mse > 0
        captured = []
        hook = _inner(model).model.register_forward_hook(lambda _m, _i, out: captured.append(out[0])) if want_hidden else None
        try:
            logits = model(input_ids).logits  # through the (DDP) wrapper, so gradients synchronise
        finally:
            if hook is not None:
                hook.remove()
        if self.cache is not None:
            t_logits, t_hidden = self.cache.logits(input_ids, self.teacher), None
        else:
            t_logits, t_hidden = self.teacher.logits_and_hidden(input_ids, want_hidden)
        v = self.vocab
        student = logits[:, :-1, :v].flatten(0, 1)
        teacher = t_logits[:, :-1, :v].flatten(0, 1).to(self.device)
        targets = input_ids[:, 1:].flatten()
        loss, self.last_parts = distill_loss(student, teacher, targets, s.alpha, s.temperature, s.chunk_tokens)
        if want_hidden:
            projected = self.modules[0](captured[0][:, :-1].float())
            target = t_hidden[:, :-1].to(self.device, torch.float32)
            loss = loss + s.hidden_mse * (projected - target).pow(2).mean(-1).sum()
        return loss, targets.numel()


def _inner(model):
    return model.module if hasattr(model, "module") else model


def make_objective(recipe: Recipe, model, tokenizer, accelerator) -> DistillObjective:
    """The trainer's `objective` hook for the recipe's `distill` section."""
    d = recipe.distill
    device = accelerator.device
    from ..model.checkpoint import model_source
    teacher = load_teacher(model_source(d.teacher, recipe.resolve_path), d.teacher_dtype, d.teacher_device or device)
    vocab = min(model.config.vocab_size, teacher.vocab_size)
    if vocab < tokenizer.vocab_size:
        raise UserError(f"distill.teacher: {teacher.path} predicts {teacher.vocab_size} tokens, fewer than the "
                        f"tokenizer's {tokenizer.vocab_size} — the vocabularies differ; use the teacher's tokenizer")
    projection = None
    if d.hidden_mse > 0:  # the student side is projected: a teacher-side map could shrink its targets to 0
        projection = torch.nn.Linear(model.config.hidden_size, teacher.hidden_size, bias=False)
    cache = LogitCache(recipe.resolve_path(d.cache_dir), teacher) if d.cache_dir else None
    return DistillObjective(teacher, d, vocab, device, projection, cache)


def run(recipe_path: str | Path, overrides: list[str] | None = None, resume: str | None = None,
        console=None) -> Path:
    """Distil per the recipe (training its teacher first when none is named); returns the student's run directory."""
    from ..data.tokenizer import tokenizer_for_recipe
    from .run import _absolute_paths
    from .run import run as train
    overrides = list(overrides or [])
    recipe = _absolute_paths(load_recipe(recipe_path, overrides))
    if recipe.distill.teacher is None:
        teacher_dir = train_teacher(recipe, str(recipe_path), console)
        overrides.append(f"distill.teacher={teacher_dir}")
    else:
        from ..model.checkpoint import model_source  # a directory, or a Hub id's cached snapshot
        teacher_dir = model_source(recipe.distill.teacher, recipe.resolve_path)
        if not teacher_dir.is_dir():
            raise UserError(f"distill.teacher: {recipe.distill.teacher} not found — fill in a transformers causal-LM "
                            "directory or an mmfree run with ternary: false (or null to train one)")
        overrides.append(f"distill.teacher={teacher_dir.absolute()}")
    check_vocabulary(teacher_dir, tokenizer_for_recipe(recipe.tokenizer.name, recipe.resolve_path))
    return train(recipe_path, overrides, resume, console, objective=make_objective)


def teacher_recipe(recipe: Recipe, source: str) -> Recipe:
    """The recipe of the teacher trained when none is given: this one, full precision, teacher_recipe on top."""
    raw = recipe.to_dict()
    raw.pop("distill")
    raw = _merge(raw, {"model": {"ternary": False}, "train": {"run_name": None}})
    raw = _merge(raw, recipe.distill.teacher_recipe)
    if isinstance(raw.get("train"), dict) and raw["train"].get("run_name") is None:
        # named by its recipe: the same teacher recipe finds its finished run, another one trains anew
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:8]
        raw["train"]["run_name"] = f"{recipe.name}-teacher-{digest}"
    return recipe_from_dict(raw, name=f"{recipe.name}-teacher", base_dir=recipe.base_dir,
                            source=f"{source}: distill.teacher_recipe")


def train_teacher(recipe: Recipe, source: str, console=None) -> Path:
    """Train the recipe's teacher, or reuse the finished one already in its run directory."""
    from .run import SUMMARY_FILE
    from .run import run as train
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("distill.teacher is null: train the teacher in a single process first "
                        f"(`mmfree distill {source}` without accelerate launch), or name one in distill.teacher")
    wanted = teacher_recipe(recipe, source)
    run_dir = (Path(wanted.train.output_dir) / wanted.train.run_name).absolute()
    if (run_dir / SUMMARY_FILE).is_file():
        done = load_recipe(run_dir / "recipe.yaml")
        if done.to_dict() != wanted.to_dict():
            raise UserError(f"{run_dir} holds a teacher trained from another recipe — remove it, change "
                            "distill.teacher_recipe.train.run_name, or name a teacher in distill.teacher")
        if console is not None:
            console.print(f"teacher: reusing {run_dir}", highlight=False, markup=False)
        return run_dir
    resume = str(run_dir) if (run_dir / "recipe.yaml").is_file() else None
    with tempfile.TemporaryDirectory() as tmp:  # paths in it are absolute, so the file may live anywhere
        path = Path(tmp) / f"{wanted.name}.yaml"
        write_text(path, wanted.to_yaml())
        return train(path, [], resume, console)
