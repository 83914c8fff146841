"""What several test files share and is not a fixture (fixtures live in conftest.py)."""

import os
import subprocess
import sys


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
