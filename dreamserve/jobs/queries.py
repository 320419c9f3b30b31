"""Load the named SQL blocks of queries.sql (`-- name: ...`), picking dialect overrides.

All SQL lives in one file so the statements can be read, reviewed and ported together; a block
named `name@dialect` replaces `name` on that dialect.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split the file into {name: sql}; comment-only lines are dropped from each block."""
    parts = _NAME.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("--")]
        if name in blocks:
            raise ValueError(f"queries.sql defines {name!r} twice")
        blocks[name] = "\n".join(lines)
    return blocks


@cache
def load(dialect: str) -> dict[str, str]:
    blocks = parse(resources.files("dreamserve.jobs").joinpath("queries.sql").read_text())
    chosen = {n: sql for n, sql in blocks.items() if "@" not in n}
    for name, sql in blocks.items():
        base, _, only = name.partition("@")
        if only == dialect:
            chosen[base] = sql
    return chosen
