"""Failure signatures: the same root cause gives the same short hash in every cell.

A signature is the exception type, its message with the volatile parts
normalised (addresses, ids, numbers, paths) and the innermost frame inside the
engine's package. The hash uses the frame's file and function, not its line,
so the same bug groups together across vLLM versions whose line numbers moved.
"""

from __future__ import annotations

import hashlib
import os
import re
import traceback
from types import TracebackType

from farm.model.results import ErrorInfo
from farm.text import strip_ansi

ENGINE_PACKAGE = "vllm"
TRACEBACK_TAIL_LINES = 40
# The farm package this process runs (a cell runs a snapshot of it, farm.envs.build.farm_code).
_FARM_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NORMALISERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"(?:/[\w.@+-]+)+/?"), "<path>"),
    (re.compile(r"\b[0-9a-f]{8,}\b"), "<id>"),
    (re.compile(r"\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b"), "<n>"),
    (re.compile(r"\s+"), " "),
]


_PYDANTIC_HEADER = re.compile(r"^\d+ validation errors? for (\w+)$")
_PYDANTIC_DETAIL = re.compile(r"^\s*(?:Value error, |Assertion failed, )?(.*?)\s*(?:\[type=.*)?$")


def headline(message: str) -> str:
    """The line of a message that says what went wrong.

    Pydantic errors (vLLM validates its config with pydantic) open with a generic
    "1 validation error for VllmConfig"; the reason is on the next line.
    """
    lines = [line for line in strip_ansi(message).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    header = _PYDANTIC_HEADER.match(lines[0].strip())
    if header and len(lines) > 1:
        detail = _PYDANTIC_DETAIL.match(lines[1])
        return f"{header.group(1)}: {detail.group(1) if detail else lines[1].strip()}"
    return lines[0]


def normalise_message(message: str) -> str:
    """Strip the parts of a message that vary between otherwise identical failures."""
    text = headline(message)
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text[:300]


def engine_frame(tb: TracebackType | None) -> tuple[str, str] | None:
    """The innermost frame inside the engine package as ("vllm/x/y.py:LINE", function)."""
    found = None
    for frame in traceback.extract_tb(tb):
        relative = _engine_relative(frame.filename)
        if relative is not None:
            found = (f"{relative}:{frame.lineno}", frame.name)
    return found


def farm_origin(exc: BaseException) -> str | None:
    """``farm/x.py:LINE`` when the farm's own code raised ``exc``: the innermost frame that is the farm's or
    the engine's is the farm's. A vLLM frame below it makes it the engine's error; frames of other libraries
    (torch, transformers) are passed over, so a reference model that transformers cannot run is the farm's,
    not vLLM's. An exception class marked ``stands_in_for_engine`` (the fault-injection engine's injected
    faults, a TEST SEAM) is the engine's wherever it was raised."""
    innermost = _innermost_cause(exc)
    if getattr(innermost, "stands_in_for_engine", False):
        return None
    for tb in (innermost.__traceback__, exc.__traceback__):
        for frame in reversed(traceback.extract_tb(tb)):
            if _engine_relative(frame.filename) is not None:
                return None
            path = os.path.abspath(frame.filename)
            if path.startswith(_FARM_DIR + os.sep):
                return f"farm/{os.path.relpath(path, _FARM_DIR).replace(os.sep, '/')}:{frame.lineno}"
    return None


def _engine_relative(filename: str) -> str | None:
    parts = filename.replace("\\", "/").split("/")
    # The last "vllm" directory wins so that a checkout at /src/vllm/vllm/... still reads vllm/....
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == ENGINE_PACKAGE:
            return "/".join(parts[index:])
    return None


def signature_of(error_type: str, normalized_message: str, frame: str | None, function: str | None) -> str:
    frame_file = frame.rsplit(":", 1)[0] if frame else ""
    key = "|".join([error_type, normalized_message, frame_file, function or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def error_info(exc: BaseException, probe: str | None = None, log: str = "") -> ErrorInfo:
    """Describe an exception raised by the engine under test, with its signature.

    When the exception only wraps a failure in another process (vLLM's EngineCore or a
    worker), the root cause that process printed to ``log`` is the signature, and the
    wrapper's text is kept beside it.
    """
    innermost = _innermost_cause(exc)
    if log and is_wrapper(innermost):
        root = root_cause_from_log(log, probe)
        if root is not None:
            root.wrapper = f"{type(innermost).__name__}: {str(innermost)[:500]}"
            return root
    located = engine_frame(innermost.__traceback__) or engine_frame(exc.__traceback__)
    frame, function = located if located else (None, None)
    error_type = type(innermost).__name__
    normalized = normalise_message(str(innermost))
    tail = "".join(traceback.format_exception(exc)).splitlines()[-TRACEBACK_TAIL_LINES:]
    return ErrorInfo(
        type=error_type,
        message=str(innermost)[:2000],
        frame=frame,
        normalized_message=normalized,
        signature=signature_of(error_type, normalized, frame, function),
        traceback_tail="\n".join(tail),
        probe=probe,
    )


def _innermost_cause(exc: BaseException) -> BaseException:
    """Follow explicit ``raise ... from`` chains to the root cause; wrappers hide it."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc


# Exceptions that only say "the root cause is elsewhere": the engine core or a worker ran in
# another process, printed the real traceback to the log, and the caller got this wrapper.
WRAPPER_MESSAGES = re.compile(
    r"See root cause above|See stack trace for root cause|Engine core initialization failed"
    r"|WorkerProc initialization failed|EngineCore encountered an issue|Engine process failed to start"
    # vLLM 0.20-0.22's multiproc executor: "Worker failed with error '…', please check the stack trace above …"
    r"|check the stack trace above for the root cause",
    re.IGNORECASE,
)
WRAPPER_TYPES = {"EngineDeadError", "EngineGenerateError"}
# vLLM prefixes every line a subprocess logs: "(EngineCore_DP0 pid=12) ERROR 11-26 06:19:54 [core.py:1510] ".
_LOG_PREFIX = re.compile(r"^\((?P<proc>[^()]*pid=\d+)\) (?:[A-Z]+ \d\d-\d\d \d\d:\d\d:\d\d \[[^\]]+\] ?)?")
_FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")


def is_wrapper(exc: BaseException) -> bool:
    return type(exc).__name__ in WRAPPER_TYPES or bool(WRAPPER_MESSAGES.search(str(exc)))


def parse_tracebacks(log: str) -> list[tuple[str, str, list[tuple[str, int, str]]]]:
    """Every Python traceback in a log as (exception type, message, frames), in order of completion.

    Lines are first split by the process that logged them, so tracebacks that several
    processes print at once do not interleave.
    """
    streams: dict[str, list[tuple[int, str]]] = {}
    for number, raw in enumerate(log.splitlines()):
        match = _LOG_PREFIX.match(raw)
        proc = match.group("proc") if match else ""
        streams.setdefault(proc, []).append((number, raw[match.end():] if match else raw))
    found: list[tuple[int, tuple[str, str, list[tuple[str, int, str]]]]] = []
    for lines in streams.values():
        frames: list[tuple[str, int, str]] | None = None
        for order, line in lines:
            if line.startswith("Traceback (most recent call last):"):
                frames = []
                continue
            if frames is None:
                continue
            frame = _FRAME_LINE.match(line)
            if frame:
                frames.append((frame.group("file"), int(frame.group("line")), frame.group("func")))
            elif line and not line[0].isspace():
                exception = _EXCEPTION_LINE.match(line.strip())
                if exception and frames:
                    name = exception.group("type").rsplit(".", 1)[-1]
                    found.append((order, (name, exception.group("message") or "", frames)))
                frames = None
    return [tb for _, tb in sorted(found, key=lambda item: item[0])]


def root_cause_from_log(log: str, probe: str | None = None) -> ErrorInfo | None:
    """The first traceback in a log that is not itself a wrapper: the root cause a subprocess printed."""
    for error_type, message, frames in parse_tracebacks(log):
        if error_type in WRAPPER_TYPES or WRAPPER_MESSAGES.search(message):
            continue
        located = [(f"{rel}:{line}", func) for file, line, func in frames if (rel := _engine_relative(file))]
        frame, function = located[-1] if located else (None, None)
        normalized = normalise_message(message)
        tail = [f'  File "{file}", line {line}, in {func}' for file, line, func in frames[-12:]]
        return ErrorInfo(
            type=error_type,
            message=message[:2000],
            frame=frame,
            normalized_message=normalized,
            signature=signature_of(error_type, normalized, frame, function),
            traceback_tail="\n".join([*tail, f"{error_type}: {message}"]),
            probe=probe,
            origin="log",
        )
    return None
