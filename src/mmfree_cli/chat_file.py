"""A saved chat: one checksummed safetensors file holding the recurrent state (tensor `state`)
and, in its metadata under `mmfree.chat`, the conversation as JSON.

Reading validates everything before the session uses any of it (a crafted file gets one line, not
a traceback and not a half-restored session); writing never replaces a file that is not itself a
saved chat (a typo like `/save runs/latest/model.safetensors` must not overwrite the weights).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .fileio import load_safetensors, save_safetensors
from .generate import SamplingParams

META_KEY = "mmfree.chat"
FORMAT_VERSION = "1"
MAX_META_CHARS = 64 << 20
"""A saved chat's JSON is at most this long (a very long conversation is a few MB)."""


@dataclass
class SavedChat:
    messages: list[dict[str, str]]
    consumed: str
    carry_tokens: list[int]
    carry_text: str
    params: SamplingParams
    state: torch.Tensor | None


def is_saved_chat(path: Path) -> bool:
    """Whether `path` is a file this module wrote (so /save may replace it)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return META_KEY in (f.metadata() or {})
    except Exception:  # any unreadable file is not one of ours
        return False


def write_chat(path: str | Path, meta: dict[str, Any], state: torch.Tensor | None) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory — give a file name, e.g. /save {path / 'chat.safetensors'}")
    if path.exists() and not is_saved_chat(path):
        raise UserError(f"{path} exists and is not a saved chat — /save will not overwrite it; choose another name")
    meta = {"format_version": FORMAT_VERSION, **meta}
    save_safetensors({"state": state} if state is not None else {}, path, {META_KEY: json.dumps(meta)})
    return path


def params_from(raw: Any, where: str) -> SamplingParams:
    """Sampling parameters from untrusted values: each checked against its field's type."""
    if not isinstance(raw, dict):
        raise UserError(f"{where}: sampling parameters must be a mapping")
    hints = typing.get_type_hints(SamplingParams)
    names = {f.name for f in dataclasses.fields(SamplingParams)}
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise UserError(f"{where}: unknown sampling parameter {str(key)[:40]!r} — known: {', '.join(sorted(names))}")
        values[key] = coerce_param(key, value, hints[key], where)
    return SamplingParams(**values)


def coerce_param(key: str, value: Any, hint: Any, where: str) -> Any:
    def bad(what: str) -> UserError:
        return UserError(f"{where}: {key} must be {what}, got {json.dumps(value)[:40]}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or not -2 ** 63 <= value < 2 ** 63:
            raise bad("an integer")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise bad("a number")
        return value
    # stop: one string or a list of strings
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise bad("a string or a list of strings")


def read_chat(path: str | Path, hidden_size: int, layers: int, vocab_size: int, state_like: Any) -> SavedChat:
    """Read and check a saved chat against the current model; UserError names any problem."""
    tensors, raw = load_safetensors(path)
    text = raw.get(META_KEY)
    if text is None or len(text) > MAX_META_CHARS:
        raise UserError(f"{path}: not a saved chat — save one with /save")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{path}: the saved chat is damaged (its JSON does not parse) — save it again") from None
    fix = "— save it again with /save"
    if not isinstance(meta, dict):
        raise UserError(f"{path}: the saved chat is damaged {fix}")
    model = meta.get("model")
    if not isinstance(model, dict) or model.get("hidden_size") != hidden_size or model.get("layers") != layers:
        raise UserError(f"{path}: saved with a different model — load it with that model")
    messages = meta.get("messages")
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise UserError(f"{path}: messages must be a list of {{role, content}} strings {fix}")
    carry = meta.get("carry_tokens")
    if not isinstance(carry, list) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab_size
                                              for t in carry):
        raise UserError(f"{path}: carry_tokens must be token ids of this model {fix}")
    for key in ("consumed", "carry_text"):
        if not isinstance(meta.get(key), str):
            raise UserError(f"{path}: {key} must be text {fix}")
    params = params_from(meta.get("params"), str(path))
    state = tensors.get("state")
    if state is not None:
        if not torch.is_tensor(state_like) or tuple(state.shape) != tuple(state_like.shape) \
                or not state.dtype.is_floating_point or not bool(torch.isfinite(state).all()):
            raise UserError(f"{path}: its state does not fit this model and engine {fix}")
        state = state.to(state_like.dtype)
    return SavedChat([{"role": m["role"], "content": m["content"]} for m in messages], meta["consumed"],
                     carry, meta["carry_text"], params, state)
