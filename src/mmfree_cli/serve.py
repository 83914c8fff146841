"""`mmfree serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over any engine.

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions
(`stream: true` answers as server-sent events ending in `data: [DONE]`). Errors are OpenAI-style
bodies `{"error": {"message", "type", "param", "code"}}` with a 4xx status: malformed JSON, wrong
types or out-of-range parameters (400), too many tokens (400). The server has one model, so a
request's `"model"` may be missing or any name (clients that insist on one still work).

One scheduler thread owns the engine. Requests queue for it; up to `max_batch` run at once, each
with its own recurrent state, advanced together by one batched `engine.step` per token
(`generate.decode_step`) — so a request never sees another's state. A chat's leading system
message is read once and its state reused (`generate.PrefixCache`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from .chat import ChatTemplate
from .engines.base import Engine
from .errors import UserError
from .generate import PrefixCache, SamplingParams, Sequence, decode_step, encode_prompt
from .prefill import PromptFeed, prompt_feed
from .serve_guard import Guard
from .yamlio import excerpt

log = logging.getLogger("mmfree.serve")
INT64 = 2 ** 63


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Sampling(BaseModel):
    """The request fields both endpoints share (OpenAI names, plus top_k, min_p, repetition_penalty)."""
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: str | None = None
    """Optional and not checked: this server has one model (any name, or none, reaches it)."""
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logprobs: bool | int | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool = False


class ContentPart(BaseModel):
    """One part of a message's content list; only text parts are understood."""
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(None, ge=1)


@dataclass
class Limits:
    max_tokens: int = 2048
    """Most tokens one request may generate."""
    max_prompt_tokens: int = 32768
    """Most prompt tokens one request may send (no context limit exists: this bounds the work)."""
    default_max_tokens: int = 16
    """max_tokens when a request does not say (16 as OpenAI's completions)."""
    max_stop_chars: int = 256
    """Longest stop string: each costs work on every token, and the states kept to roll one back."""
    max_body_bytes: int = 4 << 20
    """Largest request body (a 32k-token prompt as a JSON list of ids is ~250 KB)."""
    prefill_chunk: int = 64
    """Most prompt tokens read per scheduler step while other requests decode (fewer when a decode
    step is quicker than reading them): bounds how long one long prompt delays everyone else's next
    token. Alone, a prompt is read 512 at a time."""


@dataclass
class Job:
    """One request in the scheduler: its prompt ids and sampling, and a queue back to its handler."""
    ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    prefix: list[int] = field(default_factory=list)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    sequence: Sequence | None = None
    feed: PromptFeed | None = None
    cancelled: bool = False
    checked: float = field(default_factory=time.monotonic)  # when the client's connection was last looked at

    def put(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    """The one thread that runs the engine: admits queued jobs, reads their prompts a chunk at a
    time between decode steps, steps all running ones together."""

    def __init__(self, engine: Engine, max_batch: int = 8, prefill_chunk: int = 64):
        self.engine, self.max_batch, self.prefill_chunk = engine, max_batch, prefill_chunk
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.cache = PrefixCache(engine, size=16)
        self.batch_peak = 0  # the most requests ever decoded together (shown by /health)
        self.active = self.running = 0  # requests reading their prompt or decoding, and decoding (/health)
        self.step_s = 0.0  # recent decode step time, and prompt-reading time per token (moving averages)
        self.token_s = 0.0
        threading.Thread(target=self._run, name="mmfree-scheduler", daemon=True).start()

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def _admit(self, job: Job) -> bool:
        """Set up the job's prompt reading: a short system prefix comes from the cache."""
        try:
            job.feed = prompt_feed(self.engine, job.prefix, job.ids, self.cache, self.prefill_chunk)
            return True
        except Exception as e:  # reported to that request alone; the server goes on
            job.put("error", e)
            return False

    def _read_prompt(self, job: Job, busy: bool) -> bool:
        """One chunk of the job's prompt; True once it is read. While others decode, the chunk is
        at most `prefill_chunk` tokens and, once timings are known, about one decode step's work,
        so a long prompt delays everyone else's next token by about one step."""
        try:
            tokens = 512
            if busy:
                fits = int(self.step_s / self.token_s) if self.token_s > 0 else self.prefill_chunk
                tokens = max(1, min(self.prefill_chunk, fits))
            t0, before = time.perf_counter(), job.feed.fed
            job.feed.advance(tokens)
            self.token_s = _average(self.token_s, (time.perf_counter() - t0) / max(1, job.feed.fed - before))
            if not job.feed.done:
                return False
            job.sequence = Sequence(self.engine, job.params, job.feed.state, job.feed.logits,
                                    job.prefix + job.ids)
            job.feed = None
            return True
        except Exception as e:
            job.put("error", e)
            job.cancelled = True
            return False

    def _run(self) -> None:
        running: list[Job] = []
        reading: list[Job] = []
        while True:
            while len(running) + len(reading) < self.max_batch:
                try:
                    job = self.inbox.get(block=not running and not reading)
                except queue.Empty:
                    break
                if not job.cancelled and self._admit(job):
                    reading.append(job)
            reading = [j for j in reading if not j.cancelled]
            if reading and self._read_prompt(reading[0], busy=bool(running)):
                running.append(reading.pop(0))
            running = [j for j in running if not j.cancelled]
            self.active, self.running = len(running) + len(reading), len(running)
            if not running:
                continue
            self.batch_peak = max(self.batch_peak, len(running))
            try:
                t0 = time.perf_counter()
                chunks = decode_step(self.engine, [j.sequence for j in running])
                self.step_s = _average(self.step_s, time.perf_counter() - t0)
            except Exception as e:
                for j in running:
                    j.put("error", e)
                running = []
                continue
            for job, chunk in zip(running, chunks):
                if chunk:
                    job.put("text", chunk)
                if job.sequence.finished:
                    job.put("done", job.sequence)
            running = [j for j in running if not j.sequence.finished]
            self.active, self.running = len(running) + len(reading), len(running)


def _average(old: float, new: float) -> float:
    return new if old == 0 else 0.8 * old + 0.2 * new


# ---- batched decoding on the device (serve_batch.py): the hook the app calls ----------------------
def make_scheduler(engine: Engine, max_batch: int, prefill_chunk: int = 64):
    """The continuous-batching scheduler of serve_batch.py where the engine has a device-side batched
    decoder (the cuda engine), else `Scheduler`."""
    if hasattr(engine, "batched_decoder"):
        from .serve_batch import BatchedScheduler
        return BatchedScheduler(engine, max_batch)
    return Scheduler(engine, max_batch, prefill_chunk)


def submit(sched, job) -> None:
    """Queue a job; a full queue of the batched scheduler is a 503 the client may retry."""
    from .serve_batch import ServerBusy
    try:
        sched.submit(job)
    except ServerBusy as e:
        raise APIError(503, str(e), code="server_busy", kind="server_error") from None


def scheduler_load(sched) -> dict[str, int]:
    """/health's view of the queue: requests running and waiting for a slot."""
    if sched is None:
        return {"running": 0, "queue_depth": 0}
    return {"running": getattr(sched, "running", 0), "queue_depth": sched.inbox.qsize()}
# ---------------------------------------------------------------------------------------------------


def sampling_params(req: _Sampling, limits: Limits, stops: tuple[str, ...] = ()) -> SamplingParams:
    """Check a request's sampling fields and turn them into SamplingParams (APIError 400 if bad)."""
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}, more than this server allows ({limits.max_tokens})",
                       "max_tokens", "context_length_exceeded")
    for name in ("n", "presence_penalty", "frequency_penalty", "logprobs"):
        value = getattr(req, name)
        if value not in ({1} if name == "n" else {0, None}):
            raise APIError(400, f"{name}={value!r} is not supported by this server", name, "unsupported_parameter")
    stop = [t for t in ([req.stop] if isinstance(req.stop, str) else list(req.stop or [])) if t]
    if len(stop) > 4:
        raise APIError(400, "at most 4 stop sequences", "stop")
    for text in stop:
        check_text(text, "stop")
        if len(text) > limits.max_stop_chars:
            raise APIError(400, f"a stop sequence has {len(text)} characters, more than this server allows "
                           f"({limits.max_stop_chars})", "stop")
    try:
        return SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, min_p=req.min_p, repetition_penalty=req.repetition_penalty,
                              # no seed: a fresh one, so repeated requests sample differently (as OpenAI's API)
                              seed=req.seed if req.seed is not None else secrets.randbits(63),
                              stop=tuple(stop) + stops)
    except UserError as e:
        raise APIError(400, str(e)) from None


def check_text(text: str, param: str) -> str:
    """`text` if it can be encoded (JSON lets a client send a lone surrogate, which UTF-8 cannot hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"{param} is not valid Unicode text (it holds a lone surrogate) — send UTF-8 text",
                       param) from None
    return text


def message_text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        kinds = {part.type for part in message.content} - {"text"}
        if kinds:
            raise APIError(400, f"content parts of type {excerpt(sorted(kinds))} are not supported: send text parts",
                           "messages", "unsupported_content")
        return check_text("".join(part.text or "" for part in message.content), "messages")
    return check_text(message.content or "", "messages")


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, answers with an OpenAI-style JSON body."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return JSONResponse(error_body(e.message, e.kind, e.param, e.code), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError):
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse(error_body("the request body is not valid JSON"), status_code=400)
        first = errors[0] if errors else {}
        where = excerpt(".".join(str(p) for p in first.get("loc", ())[1:]), 80).strip("'") or None
        return JSONResponse(error_body(f"{where or 'body'}: {excerpt(first.get('msg', 'invalid request'), 200).strip(chr(39))}",
                                       param=where), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        return JSONResponse(error_body(str(e.detail), "invalid_request_error" if e.status_code < 500 else "server_error"),
                            status_code=e.status_code)

    @app.exception_handler(Exception)
    async def crashed(_: Request, e: Exception):  # a bug: logged here, the client gets a JSON body without internals
        log.error("request failed", exc_info=e)
        return JSONResponse(error_body("internal server error — see the server's log", "server_error"), status_code=500)


def create_app(engine: Engine, model_id: str, template: ChatTemplate, limits: Limits | None = None,
               max_batch: int = 8, api_key: str | None = None, allowed_hosts: frozenset[str] = frozenset()) -> FastAPI:
    """The FastAPI app serving `engine` as model `model_id`; chats are rendered with `template`.

    api_key: required as `Authorization: Bearer` on /v1/; allowed_hosts: Host names served
    besides localhost and IP literals (serve_guard.py)."""
    limits = limits or Limits()
    app = FastAPI(title="mmfree", version="1")
    app.add_middleware(Guard, max_body_bytes=limits.max_body_bytes, api_key=api_key, allowed_hosts=allowed_hosts)
    app.state.scheduler = None  # started with the first request, inside the server's process
    created = int(time.time())

    def scheduler() -> Scheduler:
        if app.state.scheduler is None:
            app.state.scheduler = make_scheduler(engine, max_batch, limits.prefill_chunk)
        return app.state.scheduler

    def encode(text: str | list[int], add_bos: bool | None = None) -> list[int]:
        if isinstance(text, str):
            check_text(text, "prompt")
            if len(text) > 64 * limits.max_prompt_tokens:  # no tokenizer makes fewer tokens: skip the work
                raise APIError(400, f"the prompt has {len(text)} characters, far more than this server's "
                               f"{limits.max_prompt_tokens} tokens", "prompt", "context_length_exceeded")
        try:
            ids = encode_prompt(engine, text, add_bos=add_bos)
        except UserError as e:
            raise APIError(400, str(e), "prompt") from None
        if len(ids) > limits.max_prompt_tokens:
            raise APIError(400, f"the prompt has {len(ids)} tokens, more than this server allows "
                           f"({limits.max_prompt_tokens})", "prompt", "context_length_exceeded")
        return ids

    install_error_handlers(app)

    @app.get("/health")
    async def health():
        sched = app.state.scheduler
        return {"status": "ok", "model": model_id, **engine.describe(), "max_batch": max_batch,
                "batch_peak": sched.batch_peak if sched else 0, "prefix_cache_hits": sched.cache.hits if sched else 0,
                "active": getattr(sched, "active", scheduler_load(sched)["running"]), **scheduler_load(sched)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "mmfree"}]}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        if req.echo:
            raise APIError(400, "echo=true is not supported by this server", "echo", "unsupported_parameter")
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "send one prompt per request", "prompt")
            prompt = prompt[0]
        job = Job(encode(prompt), sampling_params(req, limits), asyncio.get_running_loop())
        submit(scheduler(), job)
        return await respond(job, req, "text_completion", model_id, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        if not req.messages:
            raise APIError(400, "messages must not be empty", "messages")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": message_text(m)}
                    for m in req.messages]
        try:
            text = template.render(messages, add_generation_prompt=True)
            system = template.render(messages[:1], add_generation_prompt=False) if messages[0]["role"] == "system" else ""
        except UserError as e:
            raise APIError(400, str(e), "messages") from None
        prefix = encode(system) if system and text.startswith(system) else []
        ids = encode(text[len(system):], add_bos=False) if prefix else encode(text)
        if len(prefix) + len(ids) > limits.max_prompt_tokens:
            raise APIError(400, f"the messages have {len(prefix) + len(ids)} tokens, more than this server allows "
                           f"({limits.max_prompt_tokens})", "messages", "context_length_exceeded")
        job = Job(ids, sampling_params(req, limits, template.stop), asyncio.get_running_loop(), prefix)
        submit(scheduler(), job)
        return await respond(job, req, "chat.completion", model_id, request)

    return app


async def respond(job: Job, req: _Sampling, kind: str, model_id: str, request: Request | None = None):
    """The answer to a submitted job: one JSON body, or an SSE stream when req.stream. A client that
    leaves before its answer is done cancels the job, which frees its batch slot."""
    rid = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24]
    if req.stream:
        usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(sse(job, rid, kind, usage, model_id), media_type="text/event-stream")
    parts = []
    try:
        while True:
            event, value = await next_event(job, request)
            if event == "text":
                parts.append(value)
            elif event == "error":
                raise value
            elif event == "gone":
                return None
            else:
                break
    finally:
        job.cancelled = True
    choice = {"index": 0, "finish_reason": value.finish_reason, "logprobs": None}
    if kind == "chat.completion":
        choice["message"] = {"role": "assistant", "content": "".join(parts)}
    else:
        choice["text"] = "".join(parts)
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model_id,
            "choices": [choice], "usage": usage_of(value)}


async def sse(job: Job, rid: str, kind: str, include_usage: bool, model_id: str):
    """Server-sent events: one chunk per piece of text, the finish reason, usage if asked, [DONE]."""
    chat = kind == "chat.completion"
    head = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model_id}

    def event(delta: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            d = {"role": "assistant", "content": delta or ""} if first else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**head, 'choices': [choice]}, ensure_ascii=False)}\n\n"
    try:
        if chat:
            yield event("", None, first=True)
        done = False
        while not done:
            # every event already queued goes out in one write: a server busy with many streams sends
            # a few tokens a write instead of falling behind its decoder (each token keeps its event)
            events = [await job.events.get()]
            while not job.events.empty():
                events.append(job.events.get_nowait())
            out = []
            for kind_, value in events:
                if kind_ == "text":
                    out.append(event(value, None))
                    continue
                if kind_ == "error":
                    log.error("streamed request failed", exc_info=value)
                    out.append(f"data: {json.dumps(error_body('internal server error — see the server log', 'server_error'))}\n\n")
                else:
                    out.append(event(None, value.finish_reason))
                    if include_usage:
                        out.append(f"data: {json.dumps({**head, 'choices': [], 'usage': usage_of(value)})}\n\n")
                done = True
                break
            yield "".join(out)
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled = True  # the client went away or we are done: the scheduler drops it


async def next_event(job: Job, request: Request | None, poll_s: float = 0.25) -> tuple[str, Any]:
    """The job's next event, or ("gone", None) once the client has disconnected (looked at every
    `poll_s` seconds, whether or not events keep coming)."""
    if request is not None and time.monotonic() - job.checked >= poll_s:
        job.checked = time.monotonic()
        if await request.is_disconnected():
            return "gone", None
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), timeout=poll_s)
        except asyncio.TimeoutError:
            job.checked = time.monotonic()
            if request is not None and await request.is_disconnected():
                return "gone", None


def usage_of(sequence: Sequence) -> dict[str, int]:
    prompt, completion = len(sequence.prompt_tokens), len(sequence.tokens)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def serve_command(model: str | None, engine_name: str = "auto", host: str = "127.0.0.1", port: int = 8000,
                  template: str = "auto", model_name: str | None = None, max_batch: int = 8,
                  max_tokens: int = 2048, dtype: str | None = None, threads: int | None = None,
                  device: str | None = None, api_key: str | None = None, allowed_hosts: list[str] | None = None,
                  limits: Limits | None = None) -> None:
    """`mmfree serve`: load the model (default: the newest run) and serve it until Ctrl-C.

    api_key: None reads MMFREE_API_KEY ("" there or here: no key)."""
    import os
    import socket

    import uvicorn

    from .chat import builtin_template, find_template
    from .generate import open_engine
    limits = limits or Limits(max_tokens=max_tokens)
    limits.max_tokens = max_tokens
    if max_batch < 1 or max_tokens < 1:
        raise UserError("--max-batch and --max-tokens must be at least 1")
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is not a TCP port — give one from 1 to 65535 (e.g. --port 8000)")
    for flag, value in (("--max-prompt-tokens", limits.max_prompt_tokens), ("--max-body-bytes", limits.max_body_bytes),
                        ("--max-stop-chars", limits.max_stop_chars), ("--prefill-chunk", limits.prefill_chunk)):
        if value < 1:
            raise UserError(f"{flag} is {value}; it must be at least 1")
    api_key = os.environ.get("MMFREE_API_KEY") if api_key is None else api_key
    with socket.socket() as probe:  # fail with one line, before loading the model, if taken
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}) — pick another --port") from None
    engine, path = open_engine(model, engine_name, dtype, threads, device)
    chosen = find_template(path, template) or builtin_template("dialogue")
    from .paths import model_name as name_of
    model_id = model_name or name_of(path, drop_time=True)
    hosts = frozenset(allowed_hosts or ()) | {host}
    app = create_app(engine, model_id, chosen, limits, max_batch, api_key or None, hosts)
    print(f"serving {model_id} ({engine.name}, template {chosen.name}) on http://{host}:{port}/v1"
          f"{' (API key required)' if api_key else ''}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
