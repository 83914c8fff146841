"""Hugging Face Hub model ids (`org/name`, `org/name@revision`) as local model directories.

A model argument that is not an existing path but looks like a Hub id is fetched with
`huggingface_hub.snapshot_download` into the Hub's own cache (`HF_HOME` / `HF_HUB_CACHE`, with its
progress bars), restricted to the files a model directory needs, and the snapshot directory is
used like any model directory. `HF_HUB_OFFLINE=1` is honoured: then only the cache is read, and a
missing entry is one line naming `mmfree download ID`. The Hub client's own retry warnings are
silenced during the look-up, so a failure reads as that one line, not a burst of HTTP logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

from .errors import UserError

MODEL_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]
"""What a model directory needs (the released MMfreeLM repos hold exactly these, plus a README)."""

LOCAL_ROOTS = ("runs", "exports")
"""First path components that always mean this project's own directories (`runs/latest`)."""

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """`org/name[@rev]` → (repo id, revision or None); None when `text` is not shaped like one."""
    match = _HUB_ID.match(str(text))
    if not match or str(text).startswith((".", "/", "~")):
        return None
    return match["repo"], match["rev"]


def looks_like_hub_id(text: str | Path) -> bool:
    """A Hub id that is not a local path: local paths win, and so does a missing entry of an
    existing local directory (`runs/nonexistent` is a typo, not a Hub organisation)."""
    path = Path(str(text))
    if path.parts and path.parts[0] in LOCAL_ROOTS:
        return False
    return parse_hub_id(str(text)) is not None and not path.exists() and not path.parent.is_dir()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def quiet_hub_logs():
    """Silence huggingface_hub's retry/HTTP warnings for the duration (they precede our one line)."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "httpx", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def fetch_model(spec: str, local_only: bool | None = None, downloading: bool = False) -> Path:
    """The local snapshot directory of Hub model `spec` (`org/name[@rev]`), downloading what is
    missing unless offline (`HF_HUB_OFFLINE` or `local_only`). `downloading`: for `mmfree
    download`, whose failures cannot send the user to `mmfree download`."""
    parsed = parse_hub_id(spec)
    if parsed is None:
        raise UserError(f"{spec}: not a Hub model id — give org/name or org/name@revision")
    repo, revision = parsed
    local_only = offline() if local_only is None else local_only
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import snapshot_download
    try:
        with quiet_hub_logs():
            path = Path(snapshot_download(repo, revision=revision, allow_patterns=MODEL_FILES,
                                          local_files_only=local_only))
    except (hub_errors.RepositoryNotFoundError, hub_errors.GatedRepoError) as e:
        raise UserError(f"{spec}: no such model on the Hugging Face Hub, or it needs a login "
                        f"({type(e).__name__}) — check the id, or `hf auth login`") from None
    except hub_errors.RevisionNotFoundError:
        raise UserError(f"{spec}: the Hub repo has no revision {revision!r} — give a branch, tag or commit") from None
    except hub_errors.LocalEntryNotFoundError:
        offline_now = local_only or offline()
        where = "HF_HUB_OFFLINE is set" if offline_now else "the Hugging Face Hub cannot be reached"
        if downloading:
            fix = "unset HF_HUB_OFFLINE" if offline_now else "check the network (and any proxy settings)"
            raise UserError(f"{spec}: not in the Hugging Face cache and {where} — {fix}, then run this again") from None
        raise UserError(f"{spec}: not in the Hugging Face cache and {where} — run `mmfree download {spec}` "
                        "where the network is reachable (or give a local model directory)") from None
    except OSError as e:  # disk full, permissions, a network error the client did not wrap
        raise UserError(f"{spec}: cannot fetch it ({type(e).__name__}: {str(e).splitlines()[0][:160]}) — "
                        f"check the network and disk, then `mmfree download {spec}`") from None
    if not (path / "config.json").is_file():
        raise UserError(f"{spec}: the Hub repo has no config.json — it is not a model mmfree can load")
    return path


def display_name(path: Path) -> str:
    """A readable name for a model directory: `name` of a Hub snapshot (whose directory is a
    commit hash), else the directory's own name."""
    path = Path(path)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1]
    return path.name
