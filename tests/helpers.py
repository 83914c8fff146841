"""What several test files share and is not a fixture (fixtures live in conftest.py)."""

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from mmfree_cli.resources import embedded_corpus


def mmfree(*args, cwd=None, env: dict | None = None, timeout: float = 600,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI (`python -m mmfree_cli.cli ARGS`) in a fresh interpreter.

    Arguments are str()-ed; `env` adds to the environment; COLUMNS is wide so rich does not wrap
    tables in a pipe."""
    return subprocess.run([sys.executable, "-m", "mmfree_cli.cli", *map(str, args)], cwd=cwd,
                          env={**os.environ, "COLUMNS": "250", **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(r: subprocess.CompletedProcess, name: str) -> str:
    """The CLI failed as a user error should: exit 2, one line on stderr naming `name`, no traceback."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert name in lines[0]
    return lines[0]


SMALL_MODEL = {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64}


def write_recipe(tmp_path: Path, **sections) -> Path:
    """A recipe for a very small model on the first 60 kB of the embedded corpus."""
    corpus = tmp_path / "small.txt"
    if not corpus.exists():
        corpus.write_bytes(embedded_corpus().read_bytes()[:60_000])
    recipe = {"model": dict(SMALL_MODEL),
              "data": {"source": "small.txt", "seq_len": 32, "validation_blocks": 4},
              "train": {"max_steps": 6, "micro_batch_size": 4, "sample_prompt": "", "threads": 1},
              "schedule": {"warmup_steps": 2},
              "checkpoint": {"every_steps": 3}, "eval": {"every_steps": 3}, "logging": {"every_steps": 1}}
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


MMFREE = str(Path(sys.executable).parent / "mmfree")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model_dir, *flags: str, env: dict | None = None, timeout: float = 120):
    """`mmfree serve model_dir *flags` on a free loopback port, one thread; yields its URL once
    /health answers, and stops it after."""
    import httpx
    import pytest
    port = free_port()
    proc = subprocess.Popen([MMFREE, "serve", str(model_dir), "--port", str(port), *flags],
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            assert proc.poll() is None, proc.stdout.read()
        else:
            proc.kill()
            pytest.fail("server did not come up: " + proc.stdout.read())
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
