"""Small text helpers that several layers need the same way."""

from __future__ import annotations


def first_line(text: str, limit: int | None = None) -> str:
    """The first non-empty line of ``text``, stripped; cut to ``limit`` characters with "…" when given."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if limit is not None and len(line) > limit:
        return line[: limit - 1] + "…"
    return line
