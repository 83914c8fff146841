"""Continuous batching for `mmfree serve` on an engine with a device-side batched decoder (the cuda
engine: `engines/cuda_batch.py`). `serve.create_app` picks this scheduler when the engine has one.

One thread owns the engine. Between two decode steps requests join (their prompts read by one
prefill per group of equal length, the first token chosen on the host from its logits) and leave
(finished or cancelled: the last slot moves into the freed one). A prompt longer than
PREFILL_TOKENS is read one chunk of PREFILL_TOKENS between two steps (`prefill.PromptFeed`), so a
32k-token prompt delays the others' next token by one chunk's prefill, not by the whole read. A step runs the model and chooses
every live request's next token on the GPU with its own sampler; only the token ids come back.

The host never holds the GPU up: the thread launches step k+1 before it turns step k's tokens into
text (UTF-8, stop strings, events to the clients), so that work overlaps the model. A request that
finished during step k has already been stepped once more in step k+1: that token is dropped.

Back-pressure: at most `max_queue` requests wait for a slot; more are refused with 503 at once.
Events for the clients go to their event loop in one call a step, not one a token.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict

import torch

from .generate import PrefixCache, Sequence, start
from .prefill import prompt_feed


class ServerBusy(Exception):
    """The queue is full (back-pressure): serve answers 503 with this message."""

PREFILL_TOKENS = 256
"""Most prompt tokens read by one prefill of a group: the prefill GEMM has fixed tiles up to 256 rows
(kernels/ternary_gemm/packed.py) and would otherwise tune itself for each new row count."""


def _put_all(items) -> None:
    for events, event in items:
        events.put_nowait(event)


class BatchedScheduler:
    def __init__(self, engine, max_batch: int = 8, max_queue: int | None = None, warm_up: bool = True):
        self.engine, self.max_batch = engine, max_batch
        self.max_queue = max_queue if max_queue is not None else 4 * max_batch
        self.decoder = engine.batched_decoder(max_batch)
        self.inbox: queue.Queue = queue.Queue()
        self.cache = PrefixCache(engine, size=16)
        self.batch_peak = 0  # the most requests ever decoded together (shown by /health)
        self.running = 0
        self.steps = 0
        self._warm_up = warm_up
        threading.Thread(target=self._run, name="mmfree-batched-scheduler", daemon=True).start()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a slot."""
        return self.inbox.qsize()

    def submit(self, job) -> None:
        if self.inbox.qsize() >= self.max_queue:
            raise ServerBusy(f"the server is busy ({self.running} requests running, {self.inbox.qsize()} "
                             "waiting) — retry shortly")
        self.inbox.put(job)

    # ---- the scheduler thread -------------------------------------------------------------------
    def _run(self) -> None:
        if self._warm_up:
            self.decoder.warm_up()
        slots: list = []  # slot i → the job decoding there
        reading: list = []  # jobs whose long prompts are read a chunk a step (they hold a slot's place)
        pending = None  # the launched step whose tokens are not yet turned into text
        cuda = self.decoder.device.type == "cuda"
        host = [torch.zeros(self.max_batch, dtype=torch.long, pin_memory=cuda) for _ in range(2)]
        while True:
            try:
                self._admit(slots, reading, block=not slots and not reading and pending is None)
                reading = [job for job in reading if not job.cancelled]
                if reading:
                    self._read_chunk(reading, slots)
                launched = None
                if slots:
                    n = len(slots)
                    self.batch_peak, self.running = max(self.batch_peak, n), n
                    chosen = self.decoder.step(n)
                    buf = host[self.steps % 2][:n]
                    buf.copy_(chosen, non_blocking=cuda)
                    done = torch.cuda.Event() if cuda else None
                    if done is not None:
                        done.record()
                    launched = (done, buf, list(slots))
                    self.steps += 1
                if pending is not None:
                    self._deliver(*pending)
                pending = launched
                self._free(slots)
                self.running = len(slots)
            except Exception as e:  # a bug or a device error: every running request hears of it
                for job in slots + reading + (pending[2] if pending else []):
                    job.put("error", e)
                slots, reading, pending = [], [], None

    def _admit(self, slots: list, reading: list, block: bool) -> None:
        """Take waiting requests into free slots: read their prompts (long ones start a PromptFeed
        read later, a chunk a step), choose their first tokens."""
        jobs = []
        while len(slots) + len(reading) + len(jobs) < self.max_batch:
            try:
                job = self.inbox.get(block=block and not jobs)
            except queue.Empty:
                break
            if not job.cancelled:
                jobs.append(job)
        by_length = defaultdict(list)
        for job in jobs:
            if len(job.prefix) + len(job.ids) > PREFILL_TOKENS:
                self._start_feed(job, reading)
            elif job.prefix:
                self._start_alone(job)
            else:
                by_length[len(job.ids)].append(job)
        for length, group in by_length.items():
            per_prefill = max(1, PREFILL_TOKENS // length)
            for i in range(0, len(group), per_prefill):
                self._start_group(group[i:i + per_prefill])
        for job in jobs:
            if job.feed is None:
                self._take_slot(job, slots)

    def _take_slot(self, job, slots: list) -> None:
        seq = job.sequence
        if seq is None or seq.finished:
            return
        self.decoder.put(len(slots), seq.state, seq.tokens[-1], seq.params, seq.prompt_tokens + seq.tokens)
        seq.state = None  # the slot holds it now
        slots.append(job)

    def _start_feed(self, job, reading: list) -> None:
        """A long prompt: its reading starts (a short system prefix's state from the cache)."""
        try:
            job.feed = prompt_feed(self.engine, job.prefix, job.ids, self.cache, PREFILL_TOKENS)
            reading.append(job)
        except Exception as e:  # reported to that request alone; the server goes on
            job.put("error", e)

    def _read_chunk(self, reading: list, slots: list) -> None:
        """One chunk of the first long prompt; once read, its first token and a slot."""
        job = reading[0]
        try:
            job.feed.advance(PREFILL_TOKENS)
            if not job.feed.done:
                return
            job.sequence = Sequence(self.engine, job.params, job.feed.state, job.feed.logits,
                                    job.prefix + job.ids)
        except Exception as e:
            job.put("error", e)
            reading.pop(0)
            return
        job.feed = None
        reading.pop(0)
        self._first_token(job)
        self._take_slot(job, slots)

    def _start_alone(self, job) -> None:
        try:
            job.sequence = start(self.engine, job.ids, job.params, prefix=job.prefix, cache=self.cache)
            self._first_token(job)
        except Exception as e:  # reported to that request alone; the server goes on
            job.put("error", e)

    def _start_group(self, group: list) -> None:
        """One prefill for requests whose prompts have the same length (each row as it would be alone)."""
        try:
            tokens = torch.tensor([job.ids for job in group], dtype=torch.long)
            logits, state = self.engine.prefill_last(tokens, self.engine.new_state(len(group)))
        except Exception as e:
            for job in group:
                job.put("error", e)
            return
        for i, job in enumerate(group):
            job.sequence = Sequence(self.engine, job.params, state[:, i:i + 1], logits[i], list(job.ids))
            self._first_token(job)

    @staticmethod
    def _first_token(job) -> None:
        text = job.sequence.sample()
        if text:
            job.put("text", text)
        if job.sequence.finished:
            job.put("done", job.sequence)

    def _deliver(self, done, tokens: torch.Tensor, jobs: list) -> None:
        """Turn one step's token ids into text and events (one hand-over per client event loop)."""
        if done is not None:
            done.synchronize()
        out = defaultdict(list)
        for job, token in zip(jobs, tokens.tolist()):
            seq = job.sequence
            if job.cancelled or seq.finished:
                continue
            text = seq.accept(token)
            if text:
                out[job.loop].append((job.events, ("text", text)))
            if seq.finished:
                out[job.loop].append((job.events, ("done", seq)))
        for loop, items in out.items():
            loop.call_soon_threadsafe(_put_all, items)

    def _free(self, slots: list) -> None:
        """Drop finished and cancelled requests; the last live slot moves into each freed one."""
        i = 0
        while i < len(slots):
            job = slots[i]
            if job.cancelled or job.sequence.finished:
                last = len(slots) - 1
                if i != last:
                    self.decoder.move(last, i)
                    slots[i] = slots[last]
                slots.pop()
            else:
                i += 1
