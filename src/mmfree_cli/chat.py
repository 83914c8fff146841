"""`mmfree chat`: an interactive terminal chat whose history lives in the recurrent state.

A recurrent model needs no KV cache and no re-reading of the conversation: after each turn the
state already holds everything said, so the next turn feeds only the new text. With a chat
template, the new text is what the template adds when the conversation grows by a message
(templates are rendered in full and the already-consumed prefix is cut off; a template that
rewrites earlier turns falls back to re-reading the conversation once). Without a template the
session is a plain continuation: what you type is appended and the model goes on from there.

Templates are Jinja (sandboxed, as Hugging Face renders them), from the model's
tokenizer_config.json `chat_template`, the run's recipe (`chat_template:` a name or Jinja text), or
a shipped one in templates/chat/ (`--template chatml|dialogue|PATH|none`).
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from .engines.base import Engine
from .errors import UserError
from .generate import Generation, SamplingParams, default_add_bos

CHAT_FORMAT_VERSION = "1"


@dataclass
class ChatTemplate:
    name: str
    source: str
    stop: tuple[str, ...] = ()
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)
        env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                        bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError as e:
            raise UserError(f"chat template {self.name}: {e}") from None


def builtin_template(name: str) -> ChatTemplate:
    from .resources import templates_dir
    path = templates_dir() / "chat" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (templates_dir() / "chat").glob("*.yaml"))
        raise UserError(f"no chat template {name!r} — choose one of {', '.join(names)}, a .yaml/.jinja file, or none")
    return template_from_file(path)


def template_from_file(path: Path) -> ChatTemplate:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        spec = yaml.safe_load(text) or {}
        if not isinstance(spec, dict) or "template" not in spec:
            raise UserError(f"{path}: a chat template file needs a `template:` key (and optionally `stop:`)")
        return ChatTemplate(path.stem, spec["template"], tuple(spec.get("stop") or ()))
    return ChatTemplate(path.stem, text)


def _special(value: Any) -> str:
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def find_template(model_dir: Path, choice: str = "auto") -> ChatTemplate | None:
    """The template to use: `choice` (name, file or none), else auto: tokenizer_config.json, then
    the run's recipe.yaml, else None (plain continuation)."""
    if choice == "none":
        return None
    if choice != "auto":
        path = Path(choice)
        return template_from_file(path) if path.is_file() else builtin_template(choice)
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        from .fileio import read_json
        spec = read_json(config)
        if isinstance(spec.get("chat_template"), str):
            return ChatTemplate("tokenizer_config", spec["chat_template"], (_special(spec.get("eos_token")),),
                                _special(spec.get("bos_token")), _special(spec.get("eos_token")))
    recipe = model_dir / "recipe.yaml"
    if recipe.is_file():
        value = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("chat_template")
        if isinstance(value, str) and value:
            return ChatTemplate("recipe", value) if "{" in value else builtin_template(value)
    return None


def printable(text: str) -> str:
    """Model text made safe for a terminal: control characters (escape sequences!) shown as �."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else "\ufffd" for c in text)


class ChatSession:
    """One conversation: messages, the recurrent state that holds them, and what is still to feed.

    One random generator serves the whole conversation (seeded with `params.seed`): every answer
    draws afresh from it, so the same question asked twice gets two samples, and the same seed
    with the same inputs replays the whole conversation."""

    def __init__(self, engine: Engine, template: ChatTemplate | None, params: SamplingParams,
                 system: str | None = None):
        self.engine, self.template, self.params, self.system = engine, template, params, system
        self.generator = torch.Generator().manual_seed(params.seed)
        self._before_last_turn = None
        self.reset()

    def reset(self) -> None:
        self._before_last_turn = None
        self.messages: list[dict[str, str]] = [{"role": "system", "content": self.system}] if self.system else []
        self.state = None
        self.consumed = ""            # text in the state plus the carry below
        self.carry_tokens: list[int] = []
        self.carry_text = ""

    def _snapshot(self) -> tuple:
        return ([dict(m) for m in self.messages], self.state, self.consumed, list(self.carry_tokens), self.carry_text)

    def retry(self) -> Generation:
        """Answer the last message again (a fresh draw): the conversation goes back to before it."""
        if self._before_last_turn is None:
            raise UserError("nothing to retry yet — send a message first")
        snapshot, user_text = self._before_last_turn
        self.messages, self.state, self.consumed, self.carry_tokens, self.carry_text = snapshot
        self.messages = [dict(m) for m in self.messages]
        return self.send(user_text)

    def send(self, user_text: str) -> Generation:
        """Start the answer to `user_text`; iterate the result to stream it, then call `finish`."""
        self._before_last_turn = (self._snapshot(), user_text)
        if self.template is None:
            delta = user_text
            self.messages.append({"role": "user", "content": user_text})
        else:
            self.messages.append({"role": "user", "content": user_text})
            full = self.template.render(self.messages, add_generation_prompt=True)
            if not full.startswith(self.consumed):  # the template rewrote history: read it all again
                self.state, self.consumed, self.carry_tokens, self.carry_text = None, "", [], ""
            delta = full[len(self.consumed):]
        tok = self.engine.tokenizer
        text = self.carry_text + delta
        fresh = self.state is None
        add_bos = fresh and default_add_bos(tok) and not (self.template and self.template.bos_token
                                                         and text.startswith(self.template.bos_token))
        ids = self.carry_tokens + tok.encode(text, add_bos=add_bos)
        if not ids:
            raise UserError("nothing to send — type some text")
        stops = tuple(dict.fromkeys(self.params.stop + (self.template.stop if self.template else ())))
        self._pending_delta = delta
        return Generation(self.engine, ids, self.params.replace(stop=stops),
                          state=self.engine.new_state(1) if fresh else self.state, generator=self.generator)

    def finish(self, gen: Generation) -> None:
        """Record the answer: the state now holds it (minus the carry fed with the next turn)."""
        seq = gen.sequence
        self.consumed += self._pending_delta + seq.text
        self.state, self.carry_tokens, self.carry_text = seq.state, seq.unfed, seq.pending_text
        self.messages.append({"role": "assistant", "content": seq.text})

    def save(self, path: str | Path) -> Path:
        """Write the conversation and its state (safetensors, checksummed) to `path`."""
        from .fileio import save_safetensors
        path = Path(path)
        meta = {"format_version": CHAT_FORMAT_VERSION, "messages": self.messages, "consumed": self.consumed,
                "carry_tokens": self.carry_tokens, "carry_text": self.carry_text, "params": asdict(self.params),
                "template": self.template.name if self.template else None, "model": self.engine.describe()}
        tensors = {"state": self.state} if torch.is_tensor(self.state) else {}
        save_safetensors(tensors, path, {"mmfree.chat": json.dumps(meta)})
        return path

    def load(self, path: str | Path) -> None:
        """Restore a saved conversation; its state is used as is (re-read only when the engine's
        state is not a tensor)."""
        from .fileio import load_safetensors
        tensors, raw = load_safetensors(path)
        try:
            meta = json.loads(raw["mmfree.chat"])
        except (KeyError, json.JSONDecodeError):
            raise UserError(f"{path}: not a saved chat — save one with /save") from None
        if meta["model"].get("hidden_size") != self.engine.config.hidden_size or \
                meta["model"].get("layers") != self.engine.config.num_hidden_layers:
            raise UserError(f"{path}: saved with a different model ({meta['model']}) — load it with that model")
        self._before_last_turn = None
        self.messages, self.params = meta["messages"], SamplingParams(**meta["params"])
        self.consumed, self.carry_tokens, self.carry_text = meta["consumed"], meta["carry_tokens"], meta["carry_text"]
        if "state" in tensors:
            self.state = tensors["state"].to(self.engine.new_state(1).dtype)
        else:  # read the whole conversation again, from the zero state
            self.state, self.carry_tokens, self.carry_text = None, [], self.consumed

    def set_params(self, assignments: list[str]) -> None:
        """`key=value` pairs (values as JSON where they parse, else strings) into the sampling params."""
        types = {f.name: f.type for f in fields(SamplingParams)}
        changes = {}
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or key not in types:
                raise UserError(f"/params takes key=value with key one of {', '.join(types)}; got {item!r}")
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
            changes[key] = tuple(parsed) if key == "stop" and isinstance(parsed, list) else parsed
        self.params = self.params.replace(**changes)
        if "seed" in changes:  # a new seed restarts the conversation's random stream
            self.generator.manual_seed(self.params.seed)


HELP = """commands: /retry (answer the last message again)  /reset (forget the conversation)
          /save [FILE]  /load FILE  /params [key=value ...] (show or set sampling)  /help  /exit"""


def run_chat(engine: Engine, template: ChatTemplate | None, params: SamplingParams, system: str | None = None,
             banner: str = "", stdin=None, out=None) -> None:
    """The interactive loop: read a line, stream the answer, show tokens/s; slash commands."""
    stdin, out = stdin or sys.stdin, out or sys.stdout
    if stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    session = ChatSession(engine, template, params, system)
    mode = f"template {template.name}" if template else "plain continuation (no chat template)"
    out.write(f"{banner}{mode} — /help for commands, /exit to leave\n")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            out.write("\n")
            return
        except KeyboardInterrupt:
            out.write("\n")
            continue
        if line.startswith("/"):
            try:
                if _command(session, line, out):
                    return
            except UserError as e:
                out.write(f"error: {e}\n")
            continue
        try:
            gen = session.send(line)
        except UserError as e:
            out.write(f"error: {e}\n")
            continue
        _stream_answer(session, gen, out, label="assistant: " if template else "")


def _stream_answer(session: ChatSession, gen: Generation, out, label: str) -> None:
    out.write(label)
    out.flush()
    try:
        for chunk in gen:
            out.write(printable(chunk))
            out.flush()
    except KeyboardInterrupt:
        out.write(printable(gen.sequence.interrupt()))
    session.finish(gen)
    out.write(f"\n[{gen.completion_tokens} tokens, {gen.tokens_per_s:.1f} tokens/s, {gen.finish_reason}]\n")
    out.flush()


def _command(session: ChatSession, line: str, out) -> bool:
    """Run one slash command; True means leave."""
    name, *args = line.split()
    if name in ("/exit", "/quit"):
        return True
    if name == "/retry":
        gen = session.retry()
        _stream_answer(session, gen, out, label="assistant: " if session.template else "")
    elif name == "/reset":
        session.reset()
        out.write("(conversation reset)\n")
    elif name == "/save":
        path = session.save(args[0] if args else f"chat-{time.strftime('%Y%m%d-%H%M%S')}.safetensors")
        out.write(f"(saved to {path})\n")
    elif name == "/load":
        if not args:
            raise UserError("/load needs a file — e.g. /load chat.safetensors")
        session.load(args[0])
        out.write(f"(loaded {len(session.messages)} messages from {args[0]})\n")
    elif name == "/params":
        if args:
            session.set_params(args)
        out.write(" ".join(f"{k}={json.dumps(v)}" for k, v in asdict(session.params).items()) + "\n")
    elif name == "/help":
        out.write(HELP + "\n")
    else:
        raise UserError(f"unknown command {name} — /help lists them")
    return False


def chat_command(model: str | None, engine_name: str, template: str, params: SamplingParams,
                 system: str | None = None, dtype: str | None = None, threads: int | None = None,
                 device: str | None = None) -> None:
    """`mmfree chat`: load the model (default: the newest run) and talk."""
    from .generate import open_engine
    engine, path = open_engine(model, engine_name, dtype, threads, device)
    chosen = find_template(path, template)
    from .paths import model_name
    banner = f"mmfree chat — {model_name(path)} on {engine.name}, seed {params.seed}; "
    run_chat(engine, chosen, params, system, banner)
