"""Sampling and streaming text generation over any engine (`engines.base.Engine`).

A `Sequence` is one prompt being continued: it owns its recurrent state, its sampler settings and
random generator, an incremental UTF-8 decoder and a stop-string matcher. `decode_step` advances
any set of sequences together — one batched `engine.step` for all that are still running — which
is what batched generation and the server's scheduler are made of. `Generation` streams one
sequence; `complete` is the one-call form.

Decoding is the recurrent O(1) step: each new token costs the same whatever came before, and the
prompt is read once by `engine.prefill`. `PrefixCache` keeps the state after a shared prefix (a
system prompt) so it is read once for many prompts.

Sampling follows the usual order (as in Hugging Face `generate`): repetition penalty on the raw
logits (CTRL: positive logits divided, negative multiplied), then temperature, top-k, top-p
(nucleus) and min-p (keep tokens with p ≥ min_p · p_max); temperature 0 is greedy argmax.
"""

from __future__ import annotations

import codecs
import dataclasses
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .engines.base import Engine, State
from .errors import UserError


@dataclass
class SamplingParams:
    max_new_tokens: int = 200
    """Most tokens to generate."""
    temperature: float = 0.0
    """0 = greedy; higher = more random."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability adds up to top_p (1 = off)."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p × the most likely one (0 = off)."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the prompt or output (1 = off)."""
    seed: int = 0
    """Seed of the sampler's random generator (same seed, same output)."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not part of the output."""
    ignore_eos: bool = False
    """Keep going after the end-of-sequence token."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(s for s in self.stop if s)
        problems = self.problems()
        if problems:
            raise UserError("bad sampling parameters: " + "; ".join(problems))

    def problems(self) -> list[str]:
        p = []
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            p.append(f"max_new_tokens must be an integer ≥ 1, got {self.max_new_tokens!r}")
        if not 0 <= self.temperature <= 100:
            p.append(f"temperature must be in [0, 100], got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            p.append(f"top_k must be an integer ≥ 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            p.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            p.append(f"min_p must be in [0, 1], got {self.min_p}")
        if not 0 < self.repetition_penalty <= 10:
            p.append(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}")
        return p

    @classmethod
    def from_options(cls, **options) -> SamplingParams:
        """Build from keyword options, naming any that is not a sampling parameter."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UserError(f"unknown sampling parameter(s) {', '.join(unknown)} — known: {', '.join(sorted(names))}")
        return cls(**options)

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)


def choose_token(logits: torch.Tensor, params: SamplingParams, seen: Seq[int],
                 generator: torch.Generator) -> int:
    """Pick the next token from one row of logits [V] (float32)."""
    logits = logits.clone()
    if params.repetition_penalty != 1.0 and len(seen):
        ids = torch.as_tensor(sorted(set(seen)), dtype=torch.long)
        ids = ids[ids < logits.numel()]
        picked = logits[ids]
        logits[ids] = torch.where(picked > 0, picked / params.repetition_penalty,
                                  picked * params.repetition_penalty)
    if params.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_k:
        kth = torch.topk(probs, min(params.top_k, probs.numel())).values[-1]
        probs = torch.where(probs >= kth, probs, 0.0)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        # drop a token when the tokens before it already reach top_p (so the first is always kept)
        drop = (sorted_p.cumsum(0) - sorted_p) >= params.top_p * sorted_p.sum()
        probs = probs.scatter(0, order, torch.where(drop, 0.0, sorted_p))
    if params.min_p > 0:
        probs = torch.where(probs >= params.min_p * probs.max(), probs, 0.0)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


class StopMatcher:
    """Holds back text that might be the start of a stop string until it is known not to be."""

    def __init__(self, stops: Seq[str]):
        self.stops = tuple(stops)
        self.pending = ""

    def push(self, text: str) -> tuple[str, int | None]:
        """Add decoded text → (text safe to emit, index in `pending`-relative text where a stop begins or None)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            out, self.pending = self.pending[:cut], ""
            return out, cut
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, None

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Utf8Stream:
    """Token ids → text as soon as whole characters are there (a character may span tokens)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.token_bytes(token_id))

    def clean(self) -> bool:
        """True when no partial character is buffered."""
        return self._decoder.getstate()[0] == b""

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


@dataclass
class _Fed:
    """What is needed to roll the state back to just before one generated token."""
    state: State
    chars: int   # len(decoded text) before this token
    clean: bool  # no partial UTF-8 character was pending before it


@dataclass
class Sequence:
    """One prompt being continued. At any time, `state` followed by the `unfed` tokens and then
    `pending_text` (text a stop string cut mid-token) is exactly the prompt plus `text`."""

    engine: Engine
    params: SamplingParams
    state: State
    logits: torch.Tensor                      # [V] for the next token
    prompt_tokens: list[int]
    generator: torch.Generator = field(repr=False, default=None)
    tokens: list[int] = field(default_factory=list)
    decoded: str = ""
    emitted: int = 0                           # chars of `decoded` already emitted
    finish_reason: str | None = None           # "stop" (EOS or stop string) | "length" | "interrupted"
    pending_text: str = ""
    fed: int = 0                               # generated tokens already in `state`
    cut: bool = False                          # a stop string ended it: later tokens are not kept

    def __post_init__(self) -> None:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.params.seed)
        self._utf8 = Utf8Stream(self.engine.tokenizer)
        self._stops = StopMatcher(self.params.stop)
        longest = max((len(s.encode()) for s in self.params.stop), default=0)
        self._history: deque[_Fed] = deque(maxlen=longest + 4 if longest else 1)
        self._seen = list(self.prompt_tokens) if self.params.repetition_penalty != 1.0 else []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        return self.decoded[:self.emitted]

    @property
    def unfed(self) -> list[int]:
        return [] if self.cut else self.tokens[self.fed:]

    def interrupt(self) -> str:
        """Stop now (e.g. Ctrl-C); returns the held-back text, which counts as emitted."""
        if self.finished:
            return ""
        self.finish_reason = "interrupted"
        return self._finish_text()

    def sample(self) -> str:
        """Choose the next token; return the text it makes safe to emit (maybe '')."""
        return self.accept(choose_token(self.logits, self.params, self._seen, self.generator))

    def accept(self, token: int) -> str:
        """Take `token` (chosen here or elsewhere, e.g. on the GPU) as the next one; return the text
        it makes safe to emit (maybe '')."""
        eos = self.engine.tokenizer.eos_id
        if token == eos and not self.params.ignore_eos:
            self.finish_reason = "stop"
            return self._finish_text()
        self.tokens.append(token)
        self._seen.append(token)
        before = _Fed(self.state, len(self.decoded), self._utf8.clean())
        piece = self._utf8.push(token)
        self.decoded += piece
        out, cut = self._stops.push(piece)
        self.emitted += len(out)
        if cut is not None:
            self.finish_reason = "stop"
            self._roll_back(self.emitted, before)
        elif len(self.tokens) >= self.params.max_new_tokens:
            self.finish_reason = "length"
            out += self._finish_text()
        else:
            self._history.append(before)
        return out

    def advance(self, logits: torch.Tensor, state: State) -> None:
        """Take the engine's output for the token just sampled."""
        self.logits, self.state = logits, state
        self.fed = len(self.tokens)

    def _finish_text(self) -> str:
        rest = self._stops.push(self._utf8.flush())[0] + self._stops.flush()
        self.decoded = self.decoded[:self.emitted] + rest
        self.emitted = len(self.decoded)
        return rest

    def _roll_back(self, stop_at: int, current: _Fed) -> None:
        """A stop string begins at char `stop_at`: put the state back before the tokens that made it."""
        self.decoded, self.cut = self.decoded[:stop_at], True
        for fed in [current, *reversed(self._history)]:
            if fed.clean and fed.chars <= stop_at:
                self.state, self.pending_text = fed.state, self.decoded[fed.chars:stop_at]
                return
        self.pending_text = ""  # the stop string is older than the history kept: state keeps it


def decode_step(engine: Engine, sequences: list[Sequence]) -> list[str]:
    """Sample one token for every unfinished sequence, then run all that continue in one batched
    engine step. Returns the text each sequence emits this step ('' for the finished)."""
    chunks = [s.sample() if not s.finished else "" for s in sequences]
    live = [s for s in sequences if not s.finished]
    if live:
        tokens = torch.tensor([s.tokens[-1] for s in live], dtype=torch.long)
        state = live[0].state if len(live) == 1 else engine.state_concat([s.state for s in live])
        logits, state = engine.step(tokens, state)
        for i, s in enumerate(live):
            s.advance(logits[i], state if len(live) == 1 else engine.state_batch_select(state, [i]))
    return chunks


class PrefixCache:
    """The state and next-token logits after a token prefix, kept for the few most recent prefixes."""

    def __init__(self, engine: Engine, size: int = 8):
        self.engine, self.size = engine, size
        self._entries: OrderedDict[tuple[int, ...], tuple[State, torch.Tensor]] = OrderedDict()
        self.hits = 0

    def get(self, prefix: Seq[int]) -> tuple[State, torch.Tensor]:
        key = tuple(prefix)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        logits, state = self.engine.prefill(torch.tensor([key], dtype=torch.long), self.engine.new_state(1))
        self._entries[key] = (state, logits[0, -1])
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return self._entries[key]


def default_add_bos(tokenizer) -> bool:
    """Whether a fresh sequence starts with BOS: yes for HF tokenizers (the released checkpoints
    were trained so), no for the byte tokenizer (our trainer packs text with no BOS, data/blocks.py)."""
    from .data.tokenizer import ByteTokenizer
    return tokenizer.bos_id is not None and not isinstance(tokenizer, ByteTokenizer)


def encode_prompt(engine: Engine, prompt: str | Seq[int], add_bos: bool | None = None) -> list[int]:
    """Prompt text → ids (BOS first when add_bos, by default `default_add_bos`); ids pass through.
    An empty prompt becomes the start-of-document token (BOS, else EOS, which separates documents)."""
    tok = engine.tokenizer
    add_bos = default_add_bos(tok) if add_bos is None else add_bos and tok.bos_id is not None
    ids = list(prompt) if not isinstance(prompt, str) else tok.encode(prompt, add_bos=add_bos)
    if not ids:
        start_id = tok.bos_id if add_bos or tok.eos_id is None else tok.eos_id
        if start_id is None:
            raise UserError("empty prompt and the tokenizer has no BOS or EOS token — give some prompt text")
        ids = [start_id]
    bad = [i for i in ids if not 0 <= i < engine.config.vocab_size]
    if bad:
        raise UserError(f"token id(s) {bad[:4]} outside the model's vocabulary of {engine.config.vocab_size}")
    return ids


def start(engine: Engine, prompt: str | Seq[int], params: SamplingParams, state: State | None = None,
          prefix: str | Seq[int] = (), cache: PrefixCache | None = None, add_bos: bool | None = None,
          generator: torch.Generator | None = None) -> Sequence:
    """Read the prompt (after `prefix`, whose state comes from `cache` when given) → a Sequence.

    `state` continues an earlier sequence (a chat): then no BOS is added and `prefix` is not used.
    `generator` draws the samples (a chat passes its own, so each turn draws afresh from one
    stream); None: a new one seeded with `params.seed`.
    """
    if state is not None:
        ids = encode_prompt(engine, prompt, add_bos=False)
        logits, state = engine.prefill(torch.tensor([ids], dtype=torch.long), state)
        return Sequence(engine, params, state, logits[0, -1], ids, generator=generator)
    prefix_ids = encode_prompt(engine, prefix, add_bos) if len(prefix) else []
    ids = encode_prompt(engine, prompt, False if prefix_ids else add_bos) if len(prompt) or not prefix_ids else []
    if prefix_ids:
        cache = cache or PrefixCache(engine, size=1)
        state, logits = cache.get(prefix_ids)
        if ids:
            out, state = engine.prefill(torch.tensor([ids], dtype=torch.long), state)
            logits = out[0, -1]
    else:
        out, state = engine.prefill(torch.tensor([ids], dtype=torch.long), engine.new_state(1))
        logits = out[0, -1]
    return Sequence(engine, params, state, logits, prefix_ids + ids, generator=generator)


class Generation:
    """Stream one continuation: iterate for text chunks; afterwards read `text`, `finish_reason`,
    `sequence.state` and the timing figures (`prompt_tokens`, `completion_tokens`, `tokens_per_s`)."""

    def __init__(self, engine: Engine, prompt: str | Seq[int], params: SamplingParams | None = None,
                 **start_options):
        self.engine = engine
        self.params = params or SamplingParams()
        t0 = time.perf_counter()
        self.sequence = start(engine, prompt, self.params, **start_options)
        self.prefill_s = time.perf_counter() - t0
        self.decode_s = 0.0

    def __iter__(self) -> Iterator[str]:
        while not self.sequence.finished:
            t0 = time.perf_counter()  # timed per step: the caller's time between chunks is not ours
            chunk = decode_step(self.engine, [self.sequence])[0]
            self.decode_s += time.perf_counter() - t0
            if chunk:
                yield chunk

    def run(self) -> str:
        for _ in self:
            pass
        return self.text

    @property
    def text(self) -> str:
        return self.sequence.text

    @property
    def finish_reason(self) -> str | None:
        return self.sequence.finish_reason

    @property
    def prompt_tokens(self) -> int:
        return len(self.sequence.prompt_tokens)

    @property
    def completion_tokens(self) -> int:
        return len(self.sequence.tokens)

    @property
    def tokens_per_s(self) -> float:
        return len(self.sequence.tokens) / self.decode_s if self.decode_s > 0 else 0.0

    def stats(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "prefill_s": round(self.prefill_s, 4), "decode_s": round(self.decode_s, 4),
                "tokens_per_s": round(self.tokens_per_s, 2), "finish_reason": self.finish_reason}


def complete(engine: Engine, prompt: str, max_new_tokens: int = 200, temperature: float = 0.0,
             seed: int = 0, **sampling) -> str:
    """The continuation of `prompt` as one string (greedy by default).

    Example: complete(engine, "ROMEO:", max_new_tokens=100, temperature=0.8, top_k=50)
    """
    add_bos = sampling.pop("add_bos", None)
    params = SamplingParams.from_options(max_new_tokens=max_new_tokens, temperature=temperature,
                                         seed=seed, **sampling)
    return Generation(engine, prompt, params, add_bos=add_bos).run()


def generate_batch(engine: Engine, prompts: list[str], params: SamplingParams | None = None,
                   prefix: str = "", add_bos: bool | None = None) -> list[Generation]:
    """Continue several prompts together (one batched step per token); sequence i uses seed + i.

    A shared `prefix` (e.g. a system prompt) is read once and its state reused for every prompt.
    """
    params = params or SamplingParams()
    cache = PrefixCache(engine, size=1)
    gens = [Generation(engine, p, params.replace(seed=params.seed + i), prefix=prefix, cache=cache, add_bos=add_bos)
            for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    seqs = [g.sequence for g in gens]
    while not all(s.finished for s in seqs):
        decode_step(engine, seqs)
    elapsed = time.perf_counter() - t0
    for g in gens:
        g.decode_s = elapsed
    return gens


def open_engine(model: str | None, engine: str = "auto", dtype: str | None = None,
                threads: int | None = None, device: str | None = None) -> tuple[Engine, Path]:
    """Resolve MODEL (default: the newest run, or the newest export of a named engine's target)
    and load it into `engine`."""
    from pathlib import Path

    from .engines import ENGINES, load_engine
    from .paths import latest_export, resolve_model
    if threads:
        torch.set_num_threads(threads)
    if model is None and engine in ENGINES and engine != "torch":
        path = latest_export(engine)
    elif model is None and engine == "auto":
        path = _newest_run_or_export()
    else:
        path = resolve_model(model)
    options = {"dtype": dtype} if dtype else {}
    if device:
        options["device"] = device
    if threads:
        options["threads"] = threads  # the cpu and onnx engines run their own threads
    return load_engine(engine, path, **options), Path(path)


def _newest_run_or_export() -> Path:
    """The newest run with weights; with none, the newest export of any target (a project that
    only holds exports still serves and chats with no path typed)."""
    from pathlib import Path

    from .paths import EXPORTS_DIR, LATEST, resolve_model
    try:
        return resolve_model(None)
    except UserError:
        exports = [link.resolve() for link in Path(EXPORTS_DIR).glob(f"*/{LATEST}") if link.exists()]
        if not exports:
            raise
        return max(exports, key=lambda p: p.stat().st_mtime)


def split_model_and_prompt(args: list[str]) -> tuple[str | None, str | None]:
    """`generate [MODEL] [PROMPT]`: one argument is a model when it is an existing directory."""
    from pathlib import Path
    if len(args) > 2:
        raise UserError(f"expected [MODEL] [PROMPT], got {len(args)} arguments — quote the prompt")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1 and Path(args[0]).is_dir():
        return args[0], None
    return None, (args[0] if args else None)


def generate_command(args: list[str], engine_name: str, params: SamplingParams, as_json: bool,
                     dtype: str | None = None, threads: int | None = None, add_bos: bool | None = None,
                     stdin=None, out=None, device: str | None = None) -> dict:
    """`mmfree generate`: stream the continuation to `out` (or print one JSON object with --json)."""
    import json
    import sys
    stdin, out = stdin or sys.stdin, out or sys.stdout
    model, prompt = split_model_and_prompt(args)
    if prompt is None or prompt == "-":
        if stdin.isatty():
            raise UserError("no prompt — give one as an argument or pipe it in: echo 'Once upon' | mmfree generate")
        prompt = stdin.read()
    engine, path = open_engine(model, engine_name, dtype, threads, device)
    gen = Generation(engine, prompt, params, add_bos=add_bos)
    for chunk in gen:
        if not as_json:
            out.write(chunk)
            out.flush()
    result = {"model": str(path), **engine.describe(), "prompt": prompt, "text": gen.text, **gen.stats()}
    if as_json:
        out.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        out.write("\n")
    return result
