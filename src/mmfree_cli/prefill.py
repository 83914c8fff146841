"""Reading a prompt in chunks, so a long prompt costs bounded memory and bounded time per call.

An engine's `prefill` returns logits for every position ([B, T, V] float32): a 1M-token prompt
would ask for gigabytes of logits nobody reads. Feeding the prompt in chunks through the
recurrent state gives the same final state and last logits (the recurrence is exact across
chunk boundaries) with memory bounded by the chunk.

`PromptFeed` does the same one chunk at a time, so the server's scheduler can interleave a long
prompt with the decode steps of other requests instead of stalling them for the whole read.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from .engines.base import Engine, State

CHUNK = 512
"""Tokens per prefill call when nothing else waits (bounds the logits held at once)."""


def prefill_chunked(engine: Engine, ids: Seq[int], state: State, chunk: int = CHUNK) -> tuple[torch.Tensor, State]:
    """Feed `ids` (at least one) from `state` in chunks → (logits [V] after the last id, new state)."""
    if not ids:
        raise ValueError("prefill_chunked needs at least one token")
    logits = None
    for i in range(0, len(ids), chunk):
        out, state = engine.prefill(torch.tensor([list(ids[i:i + chunk])], dtype=torch.long), state)
        logits = out[0, -1]
    return logits, state


class PromptFeed:
    """A prompt being read a chunk at a time: call `advance(n)` until `done`, then use
    `state` and `logits` (the next-token logits after the whole prompt)."""

    def __init__(self, engine: Engine, ids: Seq[int], state: State | None = None,
                 logits: torch.Tensor | None = None):
        self.engine, self.ids = engine, list(ids)
        self.state = engine.new_state(1) if state is None else state
        self.logits, self.fed = logits, 0

    @property
    def done(self) -> bool:
        return self.fed >= len(self.ids) and self.logits is not None

    def advance(self, tokens: int) -> None:
        """Read up to `tokens` more prompt tokens."""
        part = self.ids[self.fed:self.fed + max(1, tokens)]
        if part:
            self.logits, self.state = prefill_chunked(self.engine, part, self.state, chunk=len(part))
            self.fed += len(part)


def prompt_feed(engine: Engine, prefix: Seq[int], ids: Seq[int], cache, cached_prefix_max: int) -> PromptFeed:
    """The feed for a request's prompt: a system prefix of at most `cached_prefix_max` tokens
    starts from `cache` (a `generate.PrefixCache`: its state copied, the cache keeps its own);
    a longer prefix is read with the prompt."""
    if prefix and len(prefix) <= cached_prefix_max:
        state, logits = cache.get(list(prefix))
        return PromptFeed(engine, ids, engine.state_batch_select(state, [0]), logits)
    return PromptFeed(engine, list(prefix) + list(ids))
