"""Small text helpers that several layers need the same way."""

from __future__ import annotations

import fnmatch
import re


def first_line(text: str, limit: int | None = None) -> str:
    """The first non-empty line of ``text``, stripped; cut to ``limit`` characters with "…" when given."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if limit is not None and len(line) > limit:
        return line[: limit - 1] + "…"
    return line


# Terminal control sequences: CSI (colours, cursor moves, screen clears), OSC (window titles, hyperlinks), and
# the two-character escapes. vLLM's and Ray's coloured log lines carry them into messages; a hostile run id or
# model name can carry them to a terminal.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal control sequences (what a stored message or log tail keeps)."""
    return ANSI.sub("", text) if "\x1b" in text or "\x9b" in text else text


def terminal_safe(text: str) -> str:
    """``text`` as a terminal may show it: control sequences removed, other control characters (but newline,
    carriage return and tab) shown as ``\\xNN``."""
    text = strip_ansi(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text) if _CONTROL.search(text) else text


def strip_rule_of(path: str, rules: list[str]) -> str | None:
    """The bundle strip rule (``glob`` or ``glob!keep``: ``keep`` spares paths containing it; fnmatch, ``*`` crosses
    ``/``) that removes ``path``, relative to the site folder, or None. Shared by `farm bundle` and the cell, which
    must not import the bundle builder."""
    for rule in rules:
        glob, _, keep = rule.partition("!")
        if fnmatch.fnmatch(path, glob) and not (keep and keep in path):
            return rule
    return None
