"""Reading a job file, which comes from outside: whatever it holds ends in one line, in well under a second.

A job file is a few kilobytes of YAML (the shipped ones are 1-7 KB). What this module refuses, with the
limit in the message, before anything is validated or expanded:

- a file over ``MAX_BYTES`` (1 MiB), a directory, a device or anything else that is not a regular file;
- bytes that are not UTF-8;
- collections nested deeper than ``MAX_DEPTH``: PyYAML composes recursively, and a few thousand ``[``
  made a 3000-line ``RecursionError``;
- a document that expands to more than ``MAX_NODES`` nodes, aliases counted each time they are used: a
  YAML alias bomb is a few hundred bytes that PyYAML loads as shared references, and walking it (pydantic,
  JSON) never ends;
- a key given twice in one mapping: PyYAML keeps the last one silently (``<<`` merges may still be
  overridden, as YAML says);
- numbers that are not finite (``.inf``, ``.nan``), wherever they are: no field of a job means infinity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from farm.errors import JobSpecError
from farm.model.base import format_loc

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    def __init__(self, what: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(what)
        self.what, self.mark = what, mark


class _JobLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth limit, an expansion limit and no duplicate keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"collections nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            node: yaml.Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[str, int] = {}
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                if key.value in first:
                    raise _Refused(f"key {key.value!r} given twice in one mapping (first at line {first[key.value] + 1}); "
                                   "keep one", key.start_mark)
                first[key.value] = key.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose tree, aliases expanded, has more than MAX_NODES nodes (or refers to itself)."""
    if root is None:
        return
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order without recursion: an alias chain can be as deep as the file is long
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = _children(node)
        if children_done:
            active.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            if size[id(node)] > MAX_NODES:
                raise _Refused(f"the document expands to more than {MAX_NODES} values (aliases counted where they are used); "
                               "a job needs a few hundred", node.start_mark)
            continue
        if id(node) in active:
            raise _Refused("an alias refers to the collection it is in", node.start_mark)
        active.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_job_document(path: Path) -> Any:
    """The parsed YAML of job file ``path``, or a JobSpecError of one line saying what to change."""
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_JobLoader)  # noqa: S506 - a SafeLoader, with limits
    except _Refused as exc:
        raise JobSpecError(f"{path}{_at(exc.mark)}: {exc.what}") from None
    except yaml.reader.ReaderError as exc:
        raise JobSpecError(f"{path}: not valid YAML: character {exc.character!r} at position {exc.position} is not "
                           "allowed in YAML; job files are text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise JobSpecError(f"{path}{_at(mark)}: not valid YAML: {_one_line(getattr(exc, 'problem', None) or exc)}") from None
    except (ValueError, OverflowError, TypeError) as exc:  # PyYAML's constructors on bad values (a 30 February)
        raise JobSpecError(f"{path}: not valid YAML: {type(exc).__name__}: {_one_line(exc)}") from None
    where = _non_finite(data)
    if where is not None:
        field, value = where
        raise JobSpecError(f"{path}: {field}: {value} is not a finite number; give a number (e.g. timeout_s: 600)")
    return data


def _read_text(path: Path) -> str:
    try:
        if not path.exists():
            raise JobSpecError(f"{path}: no such job file; the shipped jobs are in jobs/ (e.g. jobs/smoke.yaml)")
        if not path.is_file():
            raise JobSpecError(f"{path}: not a job file but a {'directory' if path.is_dir() else 'special file'}; "
                               "give a YAML file (e.g. jobs/smoke.yaml)")
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)  # a file that grows while read is cut here, not read to the end
    except OSError as exc:
        raise JobSpecError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise JobSpecError(f"{path}: larger than {MAX_BYTES // 1024} KiB, the limit for a job file (the shipped jobs "
                           "are a few KB); is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise JobSpecError(f"{path}: not UTF-8 text (byte {exc.start}, line {line}); save the job file as UTF-8") from None


def _one_line(what: object) -> str:
    return " ".join(str(what).split())[:300]


def _at(mark: yaml.Mark | None) -> str:
    return f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _non_finite(data: Any) -> tuple[str, str] | None:
    """The first non-finite number in ``data`` and where (``engines[0].engine_args.x``), or None."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return format_loc(where) or "the document", str(value)
        if isinstance(value, dict):
            stack.extend(((*where, str(key)), item) for key, item in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((*where, i), item) for i, item in reversed(list(enumerate(value))))
    return None
