"""How well an engine predicts a text: summed NLL, perplexity, bits per byte and top-1 accuracy.

Shared by `mmfree eval --data` (evaluate.py) and the lm-evaluation-harness adapter (harness.py),
so neither imports the other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .engines.base import Engine
from .errors import UserError
from .generate import default_add_bos, encode_prompt

LOGITS_BUDGET = 1 << 26
"""Most logits (batch × tokens × vocab) held at once: bounds the memory of long texts."""
CHUNK_TOKENS = 4096
"""Most positions per engine call, so progress can be shown on long texts (the state carries over)."""


def text_metrics(engine: Engine, text: str, context: int = 0, max_tokens: int = 0,
                 batch: int = 8, add_bos: bool | None = None, progress=None) -> dict[str, Any]:
    """Perplexity, bits per byte and top-1 accuracy of `engine` on `text`.

    context: tokens per window, each from a zero state (0 = the whole text as one stream);
    max_tokens: score only the first that many tokens (0 = all);
    progress: called as progress(tokens scored so far, total) after each engine call.
    """
    if context < 0 or max_tokens < 0:
        raise UserError("--context and --max-tokens must be ≥ 0 (0 = no limit)")
    tokenizer = engine.tokenizer
    ids = tokenizer.encode(text)
    truncated = 0 < max_tokens < len(ids)
    ids = ids[:max_tokens] if truncated else ids
    if not ids:
        raise UserError("the held-out text is empty — give some text with --data")
    start = encode_prompt(engine, "", default_add_bos(tokenizer) if add_bos is None else add_bos)[-1]
    windows = [ids] if context == 0 else [ids[i:i + context] for i in range(0, len(ids), context)]
    nll, correct, done = 0.0, 0, 0

    def scored(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(ids))
    for length in sorted({len(w) for w in windows}, reverse=True):
        same = [w for w in windows if len(w) == length]
        for i in range(0, len(same), batch):
            n, c = score_windows(engine, same[i:i + batch], start, scored)
            nll, correct = nll + n, correct + c
    n_bytes = (sum(len(tokenizer.token_bytes(i)) for i in ids) if truncated
               else len(text.encode("utf-8")))
    return {"tokens": len(ids), "bytes": n_bytes, "context": context, "nll": nll,
            "perplexity": math.exp(nll / len(ids)), "bits_per_byte": nll / math.log(2) / max(n_bytes, 1),
            "top1": correct / len(ids)}


def score_windows(engine: Engine, windows: list[list[int]], start_id: int, scored=None) -> tuple[float, int]:
    """(summed NLL in nats, tokens ranked first) of equal-length windows, each read from a zero
    state after `start_id`, in chunks that carry the state (so memory stays bounded);
    `scored(n)` hears of each chunk's n tokens."""
    targets = torch.tensor(windows, dtype=torch.long)
    inputs = torch.cat([torch.full((len(windows), 1), start_id, dtype=torch.long), targets[:, :-1]], dim=1)
    chunk = max(1, min(CHUNK_TOKENS, LOGITS_BUDGET // (len(windows) * engine.config.vocab_size)))
    state, nll, correct = engine.new_state(len(windows)), 0.0, 0
    for s in range(0, inputs.shape[1], chunk):
        logits, state = engine.prefill(inputs[:, s:s + chunk], state)
        logits, target = logits.double().reshape(-1, logits.shape[-1]), targets[:, s:s + chunk].reshape(-1)
        nll += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(-1) == target).sum())
        if scored is not None:
            scored(target.numel())
    return nll, correct
