"""YAML read strictly: no aliases, no duplicate keys, errors as one `UserError` line.

`yaml.safe_load` expands aliases, so a few hundred bytes of nested `*a` references ("billion
laughs") grow into gigabytes before any validation runs; a recipe never needs them, so an alias
(and with it the merge key `<<: *a`) is refused at the point it appears. A key given twice in one
mapping (two `train:` sections) is refused too, instead of the later one silently winning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from .errors import UserError


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate mapping keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConstructorError(None, None, "YAML aliases (*name) are not allowed — write the value out",
                                   event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class names that problem
                continue
            if duplicate:
                raise ConstructorError(None, None, f"key {excerpt(key)} appears twice — keep one",
                                       key_node.start_mark)
        return super().construct_mapping(node, deep)


def excerpt(value: Any, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters: error lines stay one short line."""
    if isinstance(value, (str, bytes)) and len(value) > 4 * limit:
        value = value[:4 * limit]  # repr of a huge string would cost as much as the string
    text = repr(value) if not isinstance(value, (dict, list)) or len(value) <= 64 else \
        f"<{type(value).__name__} of {len(value)} items>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def loads(text: str, source: str = "YAML") -> Any:
    """Parse YAML text strictly; any problem → UserError naming `source`, the line and the fix."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        fix = "" if "—" in what else " — fix the file"
        raise UserError(f"{source}: YAML syntax error{where}: {what[:200]}{fix}") from None


def load_file(path: str | Path) -> Any:
    """Read a YAML file strictly (UTF-8); UserError when it is unreadable or not YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file — is it YAML?") from None
    return loads(text, str(path))
