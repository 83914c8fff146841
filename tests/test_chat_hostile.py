"""`mmfree chat` keeps the conversation through every bad command: /save onto a directory, a
read-only or full disk, or a file that is not a saved chat; /params with wrong types; a crafted
/load; bytes that are not UTF-8 on stdin. Saved chats get the user's umask."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from disks import full_disk, leftovers, read_only_dir
from mmfree_cli.chat import ChatSession
from mmfree_cli.chat_file import META_KEY
from mmfree_cli.errors import UserError
from mmfree_cli.fileio import save_safetensors
from mmfree_cli.generate import SamplingParams
from test_chat import MMFREE, engine, model_dir  # noqa: F401  (fixtures)

GREEDY = SamplingParams(max_new_tokens=8)


def chat(model_dir, stdin: bytes, cwd: Path, preexec=None, umask: int | None = None) -> subprocess.CompletedProcess:  # noqa: F811
    def setup():
        if umask is not None:
            os.umask(umask)
        if preexec:
            preexec()
    return subprocess.run([MMFREE, "chat", str(model_dir), "--template", "none", "-t", "0", "-n", "8"], input=stdin,
                          cwd=cwd, capture_output=True, timeout=120, preexec_fn=setup,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_bad_commands_keep_the_session(model_dir, tmp_path):  # noqa: F811
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"the model's weights")
    (tmp_path / "adir").mkdir()
    with read_only_dir(tmp_path) as ro:
        lines = ["Hello", f"/save {tmp_path / 'adir'}", f"/save {ro}/c.safetensors", f"/save {weights}",
                 "/params temperature=hot", "/params top_k=1.5", "/params stop=[1]", "/params seed=true",
                 "/load /dev/null", "/params", "again", "/save ok.safetensors"]
        r = chat(model_dir, ("\n".join(lines) + "\n").encode() + b"\xff\xfe binary \x00\x9c\n" + b"/exit\n", tmp_path)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0 and "Traceback" not in out + err, out + err
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 8, errors
    for needle in ("is a directory", "exists and is not a saved chat", "temperature must be a number",
                   "top_k must be an integer", "stop must be a string", "seed must be an integer"):
        assert any(needle in e for e in errors), (needle, errors)
    assert any(("read-only" in e) or ("permission denied" in e) for e in errors), errors
    assert weights.read_bytes() == b"the model's weights"
    assert out.count(" tokens/s, ") == 3  # Hello, again and the binary line were all answered
    assert (tmp_path / "ok.safetensors").is_file() and leftovers(tmp_path) == []


def test_save_on_a_full_disk_keeps_the_session(model_dir, tmp_path):  # noqa: F811
    with full_disk(tmp_path, kib=0) as (small, preexec):
        r = chat(model_dir, f"Hello\n/save {small}/c.safetensors\nagain\n".encode(), tmp_path, preexec)
        out = r.stdout.decode()
        assert r.returncode == 0 and "Traceback" not in out + r.stderr.decode(), out
        assert out.count(" tokens/s, ") == 2 and out.count("error:") == 1, out
        assert leftovers(small) == [] and not (small / "c.safetensors").exists()


def test_saved_chats_honour_the_umask(model_dir, tmp_path):  # noqa: F811
    r = chat(model_dir, b"Hello\n/save private.safetensors\n", tmp_path, umask=0o077)
    assert r.returncode == 0, r.stdout
    assert (tmp_path / "private.safetensors").stat().st_mode & 0o777 == 0o600


def crafted(tmp_path: Path, meta: dict | str, state: torch.Tensor | None = None) -> Path:
    path = tmp_path / "crafted.safetensors"
    save_safetensors({"state": state} if state is not None else {}, path,
                     {META_KEY: meta if isinstance(meta, str) else json.dumps(meta)})
    return path


@pytest.mark.parametrize("change, needle", [
    ({"messages": "hi"}, "messages must be a list"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages must be a list"),
    ({"carry_tokens": [10 ** 9]}, "carry_tokens"),
    ({"carry_tokens": ["a"]}, "carry_tokens"),
    ({"consumed": None}, "consumed must be text"),
    ({"params": {"temperature": "hot"}}, "temperature must be a number"),
    ({"params": {"evil": 1}}, "unknown sampling parameter"),
    ({"params": {"max_new_tokens": -1}}, "max_new_tokens"),
    ({"model": {"hidden_size": 1, "layers": 1}}, "different model"),
    ({"state": "wrong shape"}, "does not fit"),
    ({"state": "nan"}, "does not fit"),
    ("[1, 2", "damaged"),
])
def test_crafted_loads_are_refused_and_change_nothing(engine, tmp_path, change, needle):  # noqa: F811
    session = ChatSession(engine, None, GREEDY)
    gen = session.send("Hello")
    gen.run()
    session.finish(gen)
    good = session.save(tmp_path / "good.safetensors")
    from safetensors import safe_open
    with safe_open(str(good), framework="pt") as f:
        meta, state = json.loads(f.metadata()[META_KEY]), f.get_tensor("state")
    if isinstance(change, str):
        path = crafted(tmp_path, change, state)
    else:
        bad_state = {"wrong shape": torch.zeros(3), "nan": torch.full_like(state, float("nan"))}.get(change.get("state"))
        path = crafted(tmp_path, {**meta, **{k: v for k, v in change.items() if k != "state"}},
                       bad_state if bad_state is not None else state)
    before = (list(session.messages), session.params, session.consumed)
    with pytest.raises(UserError, match=needle):
        session.load(path)
    assert (session.messages, session.params, session.consumed) == before
