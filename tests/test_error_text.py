"""Every error message prints literally: a `[` in one (`pip install 'mmfree-cli[eval]'`, a list
of keys, a path) is never read as Rich markup. Help texts too, where they are markup by design."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import mmfree_cli
from mmfree_cli.cli import app, print_error
from mmfree_cli.errors import UserError

SRC = Path(mmfree_cli.__file__).parent
RICH_TAG = re.compile(r"(?<!\\)\[[a-z#/@]")  # what Rich takes for the start of a tag


def _sample_text(node: ast.expr) -> str | None:
    """The text an error message's literal would make, with every {...} filled by 'x'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _sample_text(node.left), _sample_text(node.right)
        return (left or "x") + (right or "x")
    return None


def error_messages_with_brackets() -> list[tuple[str, str]]:
    """(where, message) of every `UserError(...)` in the package whose text holds a `[`."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "UserError"
                    and node.args):
                text = _sample_text(node.args[0])
                if text and "[" in text:
                    found.append((f"{path.relative_to(SRC)}:{node.lineno}", text))
    return found


MESSAGES = error_messages_with_brackets()


def test_the_scan_finds_the_known_bracketed_hints():
    assert any("mmfree-cli[eval]" in text for _, text in MESSAGES)
    assert any("mmfree-cli[transformers]" in text for _, text in MESSAGES)


@pytest.mark.parametrize("where, message", MESSAGES, ids=[w for w, _ in MESSAGES])
def test_every_bracketed_error_prints_literally(where, message):
    out = io.StringIO()
    print_error(UserError(message), Console(file=out, width=10_000, color_system=None))
    assert out.getvalue() == f"error: {message}\n", where


def test_an_error_with_brackets_through_the_cli(tmp_path):
    """End to end: a real error path whose hint has brackets (a recipe key list in one line)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  preset: tiny\n  init_from: '[weird]/dir'\n")
    r = subprocess.run([sys.executable, "-m", "mmfree_cli.cli", "train", str(recipe)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "[weird]/dir" in r.stderr, r.stderr


def _help_texts(command, path="mmfree"):
    yield path, command.help or ""
    for param in command.params:
        yield f"{path} {param.name}", getattr(param, "help", None) or ""
    for name, sub in getattr(command, "commands", {}).items():
        yield from _help_texts(sub, f"{path} {name}")


def test_help_texts_escape_brackets_rich_would_eat():
    import typer.main
    for where, text in _help_texts(typer.main.get_command(app)):
        assert not RICH_TAG.search(text), f"{where}: write a literal [ as \\[ in help text: {text!r}"
