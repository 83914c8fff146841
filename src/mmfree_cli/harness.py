"""An lm-evaluation-harness `LM` over any mmfree engine (torch, cpu, onnx, cuda, fpga).

The model is recurrent, so scoring follows the state instead of re-reading text: for each distinct
context (a multiple-choice question shared by its answers) the context is prefilled once; every
continuation then starts from a copy of that state. The first continuation token is scored by the
context's last logits, the rest by prefilling the continuations (right-padded into one batch: with
a causal recurrence, padding after a token cannot change that token's logits).

Tokenization follows the harness's own HF model: trailing spaces of the context move to the
continuation, the pair is encoded whole and split at the context's length. A sequence starts the
way `mmfree generate` starts one (`generate.encode_prompt`): BOS for HF tokenizers, nothing for
byte-level runs, and an empty context becomes BOS (else EOS, the document separator).

Requires the optional `lm_eval` package (`pip install 'mmfree-cli[eval]'`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from lm_eval.api.model import LM

from .engines.base import Engine
from .generate import Generation, SamplingParams, default_add_bos, encode_prompt
from .scoring import score_windows


class EngineLM(LM):
    """`lm_eval` model backed by an `Engine`; pass it as `model=` to `lm_eval.simple_evaluate`."""

    def __init__(self, engine: Engine, batch_size: int = 16, add_bos: bool | None = None,
                 max_gen_toks: int = 256) -> None:
        super().__init__()
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.batch_size = max(1, batch_size)
        self.add_bos = default_add_bos(self.tokenizer) if add_bos is None else add_bos
        self.max_gen_toks = max_gen_toks

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids with the start token(s), continuation ids) as the harness's HF model splits them."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        context_ids = self.tokenizer.encode(context) if context else []
        whole = self.tokenizer.encode(context + continuation)
        bos = [self.tokenizer.bos_id] if self.add_bos and self.tokenizer.bos_id is not None else []
        return (bos + context_ids if context_ids else self._start_ids()), whole[len(context_ids):]

    def _start_ids(self) -> list[int]:
        """What an empty text starts with: BOS, else EOS (see `generate.encode_prompt`)."""
        return encode_prompt(self.engine, "", self.add_bos)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*r.args) for r in requests]
        by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (ctx, _) in enumerate(pairs):
            by_context[tuple(ctx)].append(i)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for ctx, members in by_context.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                scores = self.score_continuations(list(ctx), [pairs[i][1] for i in chunk])
                for i, score in zip(chunk, scores):
                    results[i] = score
        return results  # type: ignore[return-value]

    def score_continuations(self, context: list[int], continuations: list[list[int]]
                            ) -> list[tuple[float, bool]]:
        """Sum of log p(continuation | context) and whether greedy decoding would produce it,
        for several continuations of one context (prefilled once)."""
        engine = self.engine
        logits, state = engine.prefill(torch.tensor([context], dtype=torch.long), engine.new_state(1))
        first = logits[0, -1].double().log_softmax(-1)
        longest = max(len(c) for c in continuations)
        later = None
        if longest > 1:
            # every continuation but its last token, right-padded with token 0 (never scored)
            pad = torch.zeros(len(continuations), longest - 1, dtype=torch.long)
            for row, cont in enumerate(continuations):
                pad[row, :len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
            states = engine.state_batch_select(state, [0] * len(continuations))
            later, _ = engine.prefill(pad, states)
            later = later.double().log_softmax(-1)
        out = []
        for row, cont in enumerate(continuations):
            if not cont:
                out.append((0.0, True))
                continue
            dist = first[None] if len(cont) == 1 else torch.cat([first[None], later[row, :len(cont) - 1]])
            target = torch.tensor(cont, dtype=torch.long)
            logprob = dist.gather(-1, target[:, None]).sum().item()
            out.append((logprob, bool((dist.argmax(-1) == target).all())))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Whole-text log-likelihood: every token scored once, the state carried across chunks."""
        start = self._start_ids()[-1]
        out = []
        for r in requests:
            ids = self.tokenizer.encode(r.args[0])
            out.append(-score_windows(self.engine, [ids], start)[0] if ids else 0.0)
        return out

    def generate_until(self, requests) -> list[str]:
        """Greedy continuation of each context until one of its `until` strings or `max_gen_toks`."""
        out = []
        for r in requests:
            context, gen_kwargs = r.args
            params = SamplingParams(max_new_tokens=int(gen_kwargs.get("max_gen_toks", self.max_gen_toks)),
                                    temperature=float(gen_kwargs.get("temperature", 0.0) or 0.0),
                                    stop=tuple(_as_list(gen_kwargs.get("until"))))
            out.append(Generation(self.engine, context, params, add_bos=self.add_bos).run())
        return out


def _as_list(until: Any) -> list[str]:
    if until is None:
        return []
    return [until] if isinstance(until, str) else list(until)
