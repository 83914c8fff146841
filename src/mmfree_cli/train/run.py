"""`mmfree train`: a recipe in, a run directory out (the layout below).

    runs/<name>/  recipe.yaml (resolved)  config.json  model.safetensors  tokenizer file
                  checkpoints/step-N/  tensorboard/  metrics.jsonl  loss.png  summary.json

Works the same single-process and under `accelerate launch` (DDP on GPUs, gloo on CPU): every
process builds the same model from the same seed and trains on its own blocks of each global
batch; the main process alone writes the run's files. `runs/latest` moves to the run at its first
checkpoint (when it first has weights), never before, so a run killed in its first minutes does
not hide the last good one; `--resume auto` looks for an unfinished run of the same recipe (name
and resolved content) and says what it chose. A header (model, data, device, steps, run
directory) is printed before the first step, with a warning when the model is large for the device.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import tensors_digest, write_json, write_text
from ..paths import point_latest
from ..recipe import Recipe, load_recipe, model_config
from ..runs import LOCK_FILE, RECIPE_FILE, SUMMARY_FILE, holder_pid
from . import checkpoints


def run(recipe_path: str | Path, overrides: list[str] | None = None, resume: str | None = None,
        console=None, objective=None) -> Path:
    """Train per the recipe (or resume a run: "auto" or a run / checkpoint path); returns the run directory.

    `objective(recipe, model, tokenizer, accelerator)`, if given, returns the training loss to use instead
    of next-token CE: a callable `(model, input_ids) -> (loss_sum, n)` with a `modules` list of extra
    trainable modules (optimised, prepared and checkpointed with the model; e.g. distillation's projection).
    Validation stays plain CE."""
    recipe = _absolute_paths(load_recipe(recipe_path, overrides))  # a bad recipe fails before any heavy import
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed

    # cpu=True without CUDA: under torchrun (accelerate launch --multi_gpu) that selects gloo
    acc = Accelerator(mixed_precision=_mixed_precision(recipe.train.mixed_precision), cpu=not torch.cuda.is_available())
    picked = [None, None]
    if acc.is_main_process:
        say = (lambda line: None) if console is None else (lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
        picked = [str(p) if p else None for p in _pick_run(recipe, resume, say)]
    broadcast_object_list(picked)
    run_dir, checkpoint = Path(picked[0]), (Path(picked[1]) if picked[1] else None)
    if run_dir.joinpath("recipe.yaml").is_file() and resume:  # a resumed run keeps its own recipe
        recipe = _absolute_paths(load_recipe(run_dir / "recipe.yaml", overrides))
        recipe.name = run_dir.name
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    set_seed(recipe.train.seed)
    return _train(recipe, run_dir, checkpoint, acc, console, objective)


def _train(recipe: Recipe, run_dir: Path, checkpoint: Path | None, acc, console, objective=None) -> Path:
    from ..data import blocks
    from ..data.tokenizer import tokenizer_for_recipe

    if acc.is_main_process:
        _print_header(recipe, run_dir, acc, checkpoint, console)
    tokenizer = tokenizer_for_recipe(recipe.tokenizer.name, recipe.resolve_path)
    model = build_model(recipe, tokenizer)
    loss_fn = objective(recipe, model, tokenizer, acc) if objective else None
    extra = list(loss_fn.modules) if loss_fn is not None else []
    optimizer = build_optimizer(recipe, model, extra)
    model, optimizer, *extra = acc.prepare(model, optimizer, *extra)
    if loss_fn is not None:
        loss_fn.modules = extra
    train_source, val_set = blocks.build(recipe.data, tokenizer, recipe.train.seed, acc.process_index, acc.num_processes)
    if acc.is_main_process:
        _write_run_files(recipe, run_dir, acc.unwrap_model(model), tokenizer)
    acc.wait_for_everyone()
    try:
        return _fit(recipe, run_dir, checkpoint, acc, model, optimizer, train_source, val_set, tokenizer, loss_fn,
                    console)
    finally:
        if acc.is_main_process:
            (run_dir / LOCK_FILE).unlink(missing_ok=True)


def _fit(recipe: Recipe, run_dir: Path, checkpoint: Path | None, acc, model, optimizer, train_source, val_set,
         tokenizer, loss_fn, console) -> Path:
    from accelerate.utils import gather_object

    from .metrics import MetricsLog
    from .progress import TrainProgress
    from .trainer import Trainer

    trainer = Trainer(recipe, run_dir, model, optimizer, train_source, val_set, acc,
                      **({"loss_fn": loss_fn} if loss_fn is not None else {}))
    if checkpoint is not None:
        trainer.resume(checkpoint)
    log = MetricsLog(run_dir, acc.is_main_process, recipe.logging.tensorboard,
                     resume_step=trainer.step if checkpoint is not None else 0)
    started, start_step = time.perf_counter(), trainer.step
    progress = TrainProgress(recipe.train.max_steps, trainer.step, acc.is_main_process and recipe.logging.progress, console)
    with progress:
        val = trainer.fit(log, progress)
    wall = time.perf_counter() - started
    unwrapped = acc.unwrap_model(model)
    digests = gather_object([tensors_digest(unwrapped.state_dict())])
    first_blocks = gather_object([trainer.seen_first_blocks])
    if acc.is_main_process:
        from ..formats import run as run_format
        from ..model import save_pretrained
        save_pretrained(unwrapped, run_dir, metadata=run_format.metadata())
        log.close(recipe.logging.plot)
        summary = {"steps": trainer.step, "tokens_seen": trainer.tokens_seen, **val,
                   "wall_seconds": wall, "steps_this_session": trainer.step - start_step,
                   "processes": acc.num_processes, "parameters": unwrapped.num_parameters(),
                   "weights_sha256_per_process": digests, "first_tokens_per_process": first_blocks}
        write_json(run_dir / SUMMARY_FILE, summary)
        point_latest(run_dir)
        _print_sample(recipe, unwrapped, tokenizer, progress.console)
        progress.console.print(f"trained → {run_dir}", highlight=False, markup=False, soft_wrap=True)
    acc.wait_for_everyone()
    acc.end_training()
    return run_dir


def build_model(recipe: Recipe, tokenizer):
    from ..model import HGRNBitForCausalLM
    from ..model.checkpoint import load_state_dict_strict, model_source, read_state_dict
    config = model_config(recipe)
    if config.vocab_size < tokenizer.vocab_size:
        raise UserError(f"model.vocab_size is {config.vocab_size} but the tokenizer has {tokenizer.vocab_size} "
                        "tokens — set model.vocab_size to at least that")
    model = HGRNBitForCausalLM(config)
    if recipe.model.init_from:
        source = model_source(recipe.model.init_from, recipe.resolve_path)
        load_state_dict_strict(model, read_state_dict(source), str(source))
    return model


def build_optimizer(recipe: Recipe, model, extra_modules=()) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (projections, embedding), never on norms or lower bounds."""
    o = recipe.optimizer
    named = [*model.named_parameters(), *(np for m in extra_modules for np in m.named_parameters())]
    decay = [p for n, p in named if p.dim() >= 2 and "lower_bounds" not in n]
    other = [p for n, p in named if not (p.dim() >= 2 and "lower_bounds" not in n)]
    groups = [{"params": decay, "weight_decay": o.weight_decay, "decay": True},
              {"params": other, "weight_decay": 0.0, "decay": False}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def _mixed_precision(choice: str) -> str:
    if choice == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return choice


def _absolute_paths(recipe: Recipe) -> Recipe:
    """Local paths made absolute, so the run's recipe.yaml works from any directory."""
    from ..data.sources import is_local_spec
    if is_local_spec(recipe.data.source):
        recipe.data.source = str(recipe.resolve_path(recipe.data.source).absolute())
    if recipe.tokenizer.name != "bytes" and recipe.resolve_path(recipe.tokenizer.name).exists():
        recipe.tokenizer.name = str(recipe.resolve_path(recipe.tokenizer.name).absolute())
    if recipe.model.init_from and recipe.resolve_path(recipe.model.init_from).exists():  # else a Hub id
        recipe.model.init_from = str(recipe.resolve_path(recipe.model.init_from).absolute())
    return recipe


def _pick_run(recipe: Recipe, resume: str | None, say=print) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from or None)."""
    root = Path(recipe.train.output_dir)
    if resume is None:
        return _new_run_dir(recipe, root), None
    if resume == "auto":
        return _pick_auto(recipe, root, say)
    path = Path(resume)
    if (path / checkpoints.STATE_FILE).is_file():
        return path.resolve().parent.parent, path.resolve()
    if (path / "recipe.yaml").is_file():
        return path.resolve(), checkpoints.latest(path.resolve())
    raise UserError(f"--resume {resume}: not a run directory or checkpoint — give runs/<name>, "
                    "runs/<name>/checkpoints/step-N, or auto")


def _pick_auto(recipe: Recipe, root: Path, say) -> tuple[Path, Path | None]:
    """`--resume auto`: the newest unfinished run of this recipe (its name, and the same resolved
    content) that has a checkpoint and that no live process is training; else a fresh run. Says which."""
    same_name, other = [], []
    unfinished = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / RECIPE_FILE).is_file()
                  and not (p / SUMMARY_FILE).is_file()] if root.is_dir() else []
    for run_dir in sorted(unfinished, key=lambda p: p.stat().st_mtime, reverse=True):
        (same_name if _named_for(run_dir.name, recipe) else other).append(run_dir)
    notes = []
    for run_dir in same_name:
        differs = _differing_keys(load_recipe(run_dir / "recipe.yaml"), recipe)
        checkpoint = checkpoints.latest(run_dir)
        if differs:
            notes.append(f"{run_dir.name} has other settings ({', '.join(differs[:4])})")
        elif holder_pid(run_dir) is not None:
            notes.append(f"{run_dir.name} is being trained by process {holder_pid(run_dir)}")
        elif checkpoint is None:
            notes.append(f"{run_dir.name} stopped before its first checkpoint")
        else:
            say(f"resuming {run_dir.name} at step {int(checkpoint.name.removeprefix('step-'))}")
            return run_dir.absolute(), checkpoint
    if other:
        notes.append(f"unfinished runs of other recipes are left alone: {', '.join(p.name for p in other[:3])}")
    fresh = _new_run_dir(recipe, root)
    why = "; ".join(notes) if notes else "none found"
    if (fresh / RECIPE_FILE).is_file():  # train.run_name names an unfinished run that cannot be resumed as asked
        raise UserError(f"--resume auto: not resuming {fresh.name} ({why}) and train.run_name names it — "
                        f"resume it as it was with --resume {fresh}, or pick another train.run_name")
    say(f"--resume auto: no unfinished run of {recipe.name} with this recipe to resume ({why}) — "
        f"starting a fresh run {fresh.name} (resume another with --resume runs/NAME)")
    return fresh, None


def _named_for(run_name: str, recipe: Recipe) -> bool:
    if recipe.train.run_name:
        return run_name == recipe.train.run_name
    return re.fullmatch(re.escape(recipe.name) + r"-\d{8}-\d{6}(-\d+)?", run_name) is not None


def _differing_keys(saved: Recipe, wanted: Recipe) -> list[str]:
    """Dotted keys whose resolved values differ between two recipes."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
        return out
    a, b = flat(saved.to_dict()), flat(wanted.to_dict())
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _new_run_dir(recipe: Recipe, root: Path) -> Path:
    name = recipe.train.run_name or f"{recipe.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir, n = root / name, 2
    while run_dir.exists() and recipe.train.run_name is None:
        run_dir, n = root / f"{name}-{n}", n + 1
    if run_dir.exists() and (run_dir / SUMMARY_FILE).is_file():
        raise UserError(f"{run_dir} already holds a finished run — pick another train.run_name or remove it")
    return run_dir.absolute()


def _write_run_files(recipe: Recipe, run_dir: Path, model, tokenizer) -> None:
    """The run's recipe, config and tokenizer, and its lock (this process's pid, for `mmfree runs`).
    `latest` is not moved here: the run has no weights yet (see checkpoints.publish)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / LOCK_FILE, f"{os.getpid()}\n")
    write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    model.config.save(run_dir / "config.json")
    tokenizer.save(run_dir)


def _print_header(recipe: Recipe, run_dir: Path, acc, checkpoint: Path | None, console) -> None:
    """Model, data, device and steps before anything heavy, and a warning if the model is large here."""
    from ..model import HGRNBitForCausalLM
    from .progress import header_lines, size_warning
    if console is None or not recipe.logging.progress:
        return
    with torch.device("meta"):  # counts without allocating
        model = HGRNBitForCausalLM(model_config(recipe), init=False)
    step = int(checkpoint.name.removeprefix("step-")) if checkpoint is not None else None
    for line in header_lines(recipe, run_dir, model, acc, step):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    warning = size_warning(model.num_parameters()["total"], recipe, acc.device)
    if warning:
        console.print(warning, style="yellow", highlight=False, markup=False, soft_wrap=True)


SAMPLE = {"temperature": 0.7, "top_p": 0.9}
"""How the end-of-run sample is drawn: greedy decoding of a small model loops on one phrase, a
mild temperature shows what it learnt (seeded with train.seed, so a run's sample is reproducible)."""


def _print_sample(recipe: Recipe, model, tokenizer, console) -> None:
    if not recipe.train.sample_prompt:
        return
    from ..engines.torch_engine import TorchEngine
    from ..generate import complete
    engine = TorchEngine.from_model(model, tokenizer)
    text = complete(engine, recipe.train.sample_prompt, max_new_tokens=recipe.train.sample_tokens,
                    seed=recipe.train.seed, add_bos=False, **SAMPLE)
    how = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in SAMPLE.items())
    console.print(f"sample ({how}, seed {recipe.train.seed}):", highlight=False, markup=False)
    console.print("─── prompt " + "─" * 30, style="dim", highlight=False, markup=False)
    console.print(recipe.train.sample_prompt.rstrip("\n"), highlight=False, markup=False)
    console.print("─── model " + "─" * 31, style="dim", highlight=False, markup=False)
    console.print(text.strip("\n"), highlight=False, markup=False)
    console.print("─" * 41, style="dim", highlight=False, markup=False)
