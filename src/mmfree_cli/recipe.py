"""Training recipes: a typed, validated schema, YAML loading and dotted command-line overrides.

A recipe is one YAML file with the sections model / tokenizer / data / optimizer / schedule /
train / checkpoint / logging / eval (and distill, read by `mmfree distill`). Each section is a small dataclass; every field has a default,
so a recipe names only what it changes. Loading checks everything at once — unknown keys (with a
"did you mean"), wrong types, impossible values, missing files — and reports all problems in one
`UserError` line, so a bad recipe never starts a run.

    recipe = load_recipe("recipes/tiny.yaml", ["optimizer.lr=3e-3", "train.max_steps=100"])
    recipe.to_dict()   # the fully resolved recipe, as written to runs/<name>/recipe.yaml
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .model.config import HGRNBitConfig, presets


@dataclass
class ModelSection:
    """Which architecture to train: a preset shape plus any HGRNBitConfig field overrides."""
    preset: str = "tiny"
    """tiny | 370m | 1.3b | 2.7b (model/presets.yaml)."""
    init_from: str | None = None
    """A run or model directory whose weights start the training (fine-tuning); None: random init."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """HGRNBitConfig fields written directly in the section (hidden_size: 256, ...)."""


@dataclass
class TokenizerSection:
    name: str = "bytes"
    """"bytes" (UTF-8 bytes + 4 specials), a tokenizer.json / model directory, or a Hub repo id."""


@dataclass
class DataSection:
    source: str = "embedded"
    """"embedded" (Tiny Shakespeare inside the package), a local file / directory / glob, or a Hub dataset name."""
    format: str = "auto"
    """auto | text | json | parquet (auto: from the file suffix; Hub names are loaded by `datasets`)."""
    hub_config: str | None = None
    """The Hub dataset's configuration name, if it has several."""
    text_field: str = "text"
    """The column holding the text in JSON / parquet / Hub records."""
    split: str = "train"
    streaming: bool = False
    """Stream records instead of downloading the whole corpus (Hub-sized data); split by node across processes."""
    validation_split: str | None = None
    """A separate split for validation (e.g. "validation"); None: hold out the tail of the training text."""
    validation_fraction: float = 0.1
    """Share of the token stream held out for validation when there is no validation_split."""
    validation_blocks: int = 64
    """At most this many blocks of seq_len tokens are used for each validation pass."""
    seq_len: int = 256
    """Tokens per training block (packed across document boundaries)."""


@dataclass
class OptimizerSection:
    name: str = "adamw"
    lr: float = 3e-3
    """Peak learning rate (after warm-up)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.01


@dataclass
class ScheduleSection:
    kind: str = "cosine"
    """cosine | linear | constant: the decay after warm-up."""
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    """The LR at the last step, as a fraction of the peak."""
    cut_at: float | None = None
    """Ternary two-stage option: at this fraction of training the LR is multiplied by cut_factor."""
    cut_factor: float = 0.5
    weight_decay_after_cut: float | None = None
    """If set, weight decay changes to this value at cut_at (the paper's second stage uses 0)."""


@dataclass
class TrainSection:
    max_steps: int = 1000
    """Optimizer steps (each one micro_batch_size × grad_accum_steps × processes blocks)."""
    micro_batch_size: int = 16
    grad_accum_steps: int = 1
    mixed_precision: str = "auto"
    """auto (bf16 where the device supports it fast: CUDA) | bf16 | no."""
    max_grad_norm: float | None = 1.0
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    """Directory name under output_dir; None: <recipe name>-<date>-<time>."""
    threads: int | None = None
    """torch CPU threads per process; None: torch's default."""
    sample_prompt: str = ""
    """A sample from this prompt (temperature 0.7, top-p 0.9, seed train.seed) is printed at the end ("" skips it)."""
    sample_tokens: int = 200
    activation_checkpointing: str = "none"
    """none | selective (recompute each block's token mixer in backward) | full (whole blocks):
    less activation memory for more compute; docs/benchmarks.md (train_step) has the measured costs."""


@dataclass
class CheckpointSection:
    every_steps: int = 250
    """Save model + optimizer + trainer state every N steps (and at the end); 0: only at the end."""
    keep_last: int = 2


@dataclass
class LoggingSection:
    every_steps: int = 10
    tensorboard: bool = True
    plot: bool = True
    """Write loss.png (train and validation curves) at the end."""
    progress: bool = True


@dataclass
class EvalSection:
    every_steps: int = 100
    """Validation loss / perplexity / bits per byte every N steps and at the end; 0: only at the end."""


@dataclass
class DistillSection:
    """`mmfree distill` only (`mmfree train` ignores it): a full-precision teacher's knowledge into this model."""
    teacher: str | None = None
    """A transformers causal-LM directory or an mmfree run with ternary: false; null: train one first (teacher_recipe)."""
    teacher_recipe: dict[str, Any] = field(default_factory=dict)
    """When teacher is null: recipe sections laid over this recipe to train the teacher (model.ternary: false by default)."""
    alpha: float = 0.5
    """loss = (1 - alpha)·CE + alpha·T²·KL(teacher ‖ student) at temperature T."""
    temperature: float = 2.0
    hidden_mse: float = 0.0
    """Weight of the MSE between the student's last hidden state (through a learned projection) and the teacher's; 0: off."""
    teacher_dtype: str = "float32"
    """float32 | bfloat16 | float16: the teacher's weights and compute."""
    teacher_device: str | None = None
    """Where the teacher runs ("cpu", "cuda:1"); null: the student's device."""
    chunk_tokens: int = 1024
    """Positions per chunk of the fp32 loss: its memory is chunk_tokens × vocabulary floats, not the whole batch's."""
    cache_dir: str | None = None
    """Cache teacher logits here (float16, one file per training block: small corpora only); null: no cache."""


@dataclass
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    distill: DistillSection = field(default_factory=DistillSection)
    name: str = "recipe"
    """The recipe's file stem, used to name runs (not a YAML key)."""
    base_dir: Path = Path(".")
    """Relative data / tokenizer paths are resolved against the recipe's directory first (not a YAML key)."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            if f.name in ("name", "base_dir"):
                continue
            section = dataclasses.asdict(getattr(self, f.name))
            if f.name == "model":
                section.update(section.pop("overrides"))
            out[f.name] = section
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def resolve_path(self, value: str) -> Path:
        """A path from the recipe: as given if it exists from here, else relative to the recipe."""
        p = Path(value).expanduser()
        if p.is_absolute() or p.exists() or any(ch in value for ch in "*?["):
            return p
        beside = self.base_dir / p
        return beside if beside.exists() else p


SECTIONS = {k: v for k, v in typing.get_type_hints(Recipe).items() if k not in ("name", "base_dir")}
_MODEL_HINTS = {k: v for k, v in typing.get_type_hints(HGRNBitConfig).items() if k != "extra"}


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f" — did you mean {close[0]!r}?" if close else f" — known keys: {', '.join(choices)}"


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as type `hint`, or raise TypeError naming what was expected.

    YAML 1.1 reads `3e-3` as a string, so float fields also accept numeric strings."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(" or ".join(errors))
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"a string, got {value!r}")
    raise TypeError(f"{hint}, got {value!r}")


def _build_section(name: str, cls: type, raw: Any, problems: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{name}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = _hints(cls)
    if name == "model":
        hints.pop("overrides")
        hints.update(_MODEL_HINTS)
    values, overrides = {}, {}
    for key, value in raw.items():
        if key not in hints:
            problems.append(f"{name}.{key}: unknown key{_suggest(str(key), sorted(hints))}")
            continue
        try:
            coerced = _coerce(value, hints[key])
        except TypeError as e:
            problems.append(f"{name}.{key}: expected {e}")
            continue
        (values if key in {f.name for f in dataclasses.fields(cls)} else overrides)[key] = coerced
    if name == "model":
        values["overrides"] = overrides
    return cls(**values)


def _check_values(r: Recipe, problems: list[str]) -> None:
    """Value constraints a type cannot say, one problem per key."""
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            problems.append(f"{key} {what}, got {value!r}")

    o, s, t, d = r.optimizer, r.schedule, r.train, r.data
    need(r.model.preset in presets(), "model.preset", f"must be one of {', '.join(presets())}", r.model.preset)
    need(o.name == "adamw", "optimizer.name", "must be adamw", o.name)
    need(o.lr > 0, "optimizer.lr", "must be > 0", o.lr)
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optimizer.betas", "must be two numbers in [0, 1)", o.betas)
    need(o.eps > 0, "optimizer.eps", "must be > 0", o.eps)
    need(o.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0", o.weight_decay)
    need(t.activation_checkpointing in ("none", "selective", "full"), "train.activation_checkpointing",
         "must be none, selective or full", t.activation_checkpointing)
    need(s.kind in ("cosine", "linear", "constant"), "schedule.kind", "must be cosine, linear or constant", s.kind)
    need(s.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0", s.warmup_steps)
    need(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", "must be in [0, 1]", s.min_lr_ratio)
    need(s.cut_at is None or 0 < s.cut_at < 1, "schedule.cut_at", "must be a fraction in (0, 1) or null", s.cut_at)
    need(s.cut_factor > 0, "schedule.cut_factor", "must be > 0", s.cut_factor)
    need(t.max_steps > 0, "train.max_steps", "must be > 0", t.max_steps)
    need(t.micro_batch_size > 0, "train.micro_batch_size", "must be > 0", t.micro_batch_size)
    need(t.grad_accum_steps > 0, "train.grad_accum_steps", "must be > 0", t.grad_accum_steps)
    need(t.mixed_precision in ("auto", "bf16", "no"), "train.mixed_precision", "must be auto, bf16 or no", t.mixed_precision)
    need(t.max_grad_norm is None or t.max_grad_norm > 0, "train.max_grad_norm", "must be > 0 or null", t.max_grad_norm)
    need(t.threads is None or t.threads > 0, "train.threads", "must be > 0 or null", t.threads)
    need(d.seq_len >= 2, "data.seq_len", "must be >= 2", d.seq_len)
    need(d.format in ("auto", "text", "json", "parquet"), "data.format", "must be auto, text, json or parquet", d.format)
    need(0 < d.validation_fraction < 1, "data.validation_fraction", "must be in (0, 1)", d.validation_fraction)
    need(d.validation_blocks > 0, "data.validation_blocks", "must be > 0", d.validation_blocks)
    for key in ("checkpoint.every_steps", "checkpoint.keep_last", "logging.every_steps", "eval.every_steps"):
        sec, name = key.split(".")
        value = getattr(getattr(r, sec), name)
        need(value >= 0, key, "must be >= 0", value)
    need(r.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", r.checkpoint.keep_last)
    _check_distill(r.distill, problems)
    _check_files(r, problems)


def _check_distill(x: DistillSection, problems: list[str]) -> None:
    def need(ok: bool, key: str, what: str, value: Any) -> None:
        if not ok:
            problems.append(f"distill.{key} {what}, got {value!r}")

    need(0 <= x.alpha <= 1, "alpha", "must be in [0, 1]", x.alpha)
    need(x.temperature > 0, "temperature", "must be > 0", x.temperature)
    need(x.hidden_mse >= 0, "hidden_mse", "must be >= 0", x.hidden_mse)
    need(x.teacher_dtype in ("float32", "bfloat16", "float16"), "teacher_dtype", "must be float32, bfloat16 or float16",
         x.teacher_dtype)
    need(x.chunk_tokens > 0, "chunk_tokens", "must be > 0", x.chunk_tokens)
    need(x.cache_dir is None or x.hidden_mse == 0, "cache_dir", "caches logits only: set it to null when hidden_mse > 0",
         x.cache_dir)
    for key in x.teacher_recipe:
        if key not in SECTIONS or key == "distill":
            problems.append(f"distill.teacher_recipe.{key}: not a recipe section"
                            f"{_suggest(str(key), [k for k in SECTIONS if k != 'distill'])}")


def _check_files(r: Recipe, problems: list[str]) -> None:
    from .data.sources import is_local_spec
    if is_local_spec(r.data.source) and not _exists(r.resolve_path(r.data.source)):
        problems.append(f"data.source: {r.data.source} not found — give an existing file, directory or glob "
                        "(or a Hub dataset name, or 'embedded')")
    from .hub import looks_like_hub_id
    if r.model.init_from is not None and not r.resolve_path(r.model.init_from).is_dir() \
            and not looks_like_hub_id(r.model.init_from):
        problems.append(f"model.init_from: {r.model.init_from} is not a run or model directory")


def _exists(path: Path) -> bool:
    if any(ch in str(path) for ch in "*?["):
        return any(Path().glob(str(path))) if not path.is_absolute() else any(Path("/").glob(str(path)[1:]))
    return path.exists()


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["optimizer.lr=3e-3", "train.max_steps=100"] → nested dict; values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"override {item!r}: write section.key=value, e.g. optimizer.lr=3e-3")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part} is not a section")
        node[leaf] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_from_dict(raw: Any, name: str = "recipe", base_dir: Path = Path("."),
                     source: str = "recipe") -> Recipe:
    """Validate a parsed recipe; every problem is reported together in one UserError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections (model:, data:, ...), got {type(raw).__name__}")
    problems: list[str] = []
    sections = {}
    for key, value in raw.items():
        if key not in SECTIONS:
            problems.append(f"{key}: unknown section{_suggest(str(key), list(SECTIONS))}")
            continue
        sections[key] = _build_section(key, SECTIONS[key], value, problems)
    recipe = Recipe(**sections, name=name, base_dir=base_dir)
    if not problems:
        _check_values(recipe, problems)
    if problems:
        raise UserError(f"{source}: " + "; ".join(problems))
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, validate. Raises UserError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe not found — try `mmfree init` for examples, or recipes/tiny.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: YAML syntax error{where}: {what} — fix the file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file — is it a recipe?") from None
    if overrides:
        raw = _merge(raw if isinstance(raw, dict) else {}, parse_overrides(overrides))
    return recipe_from_dict(raw, name=path.stem, base_dir=path.resolve().parent, source=str(path))


def model_config(recipe: Recipe) -> HGRNBitConfig:
    """The architecture a recipe asks for (from init_from's config.json when fine-tuning)."""
    from .model.config import preset
    if recipe.model.init_from:
        from .model.checkpoint import model_source  # a directory, or a Hub id's cached snapshot
        base = HGRNBitConfig.load(model_source(recipe.model.init_from, recipe.resolve_path)).to_dict()
        return HGRNBitConfig.from_dict({**base, **recipe.model.overrides})
    return preset(recipe.model.preset, **recipe.model.overrides)
