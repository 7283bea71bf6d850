"""How an attempt that returned no result ended, from Ray's error, the cell's log and its node.

When a cell's actor dies or is killed, no ``CellResult`` comes back. What is left is Ray's
exception, the log the actor wrote on its node (read back by a task pinned to that node,
``farm.cell.actor.read_log``) and whether that node still answers. From those:

    what happened                                     status       evidence
    the node died, or Ray lost contact with the actor infra_error  Ray's words; the node does not answer
    the actor could not be placed, started, set up    infra_error  Ray's exception, or death before start
    SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL          crash        faulthandler's "Fatal Python error: …" and stack
    the cell's memory limit                           crash        the farm's watchdog's line in the log (SIGKILL)
    Ray's memory monitor                              crash        ray.exceptions.OutOfMemoryError (SIGKILL)
    sys.exit(N) deep in the engine                    crash        Ray's "exits with an exit code N"
    killed from outside, or os._exit                  crash        nothing: "died without a word"
    no result within the cell's timeout               timeout      faulthandler's dump of every thread just before

Ray itself cannot say which signal killed a worker (its raylet reports only that the
connection closed), hence faulthandler in the cell's process and the log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from farm.cell.signature import _engine_relative, normalise_message, signature_of
from farm.model.results import ErrorInfo
from farm.text import first_line

# The line the memory watchdog (farm.cell.watchdog) writes into the cell's log before it kills.
MEMORY_MARKER = "farm: killed: exceeded the cell's memory limit"

# faulthandler's names for the signals it handles (Modules/faulthandler.c).
FATAL_SIGNALS = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}
_FATAL = re.compile(r"^Fatal Python error: (?P<what>" + "|".join(FATAL_SIGNALS) + r")\s*$", re.M)
_THREAD = re.compile(r"^(?:Current thread|Thread) 0x[0-9a-f]+ .*\(most recent call first\):\s*$|^Stack \(most recent call first\):\s*$")
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
_EXIT_CODE = re.compile(r"exits with an exit code (?P<code>-?\d+)")
_MEMORY = re.compile(re.escape(MEMORY_MARKER) + r".*$", re.M)
STACK_LINES = 30


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


def stacks(text: str) -> list[list[Frame]]:
    """The thread stacks faulthandler printed in ``text``, innermost frame first, in log order."""
    return [frames for _, frames in _stacks(text)]


def _stacks(text: str) -> list[tuple[bool, list[Frame]]]:
    """(whether it is the "Current thread", its frames) per stack faulthandler printed."""
    found: list[tuple[bool, list[Frame]]] = []
    current: list[Frame] | None = None
    for line in text.splitlines():
        if _THREAD.match(line):
            current = []
            found.append((line.startswith("Current thread"), current))
            continue
        if current is None:
            continue
        frame = _FRAME.match(line)
        if frame:
            current.append(Frame(frame.group("file"), int(frame.group("line")), frame.group("func")))
        elif line.strip():
            current = None
    return [(is_current, frames) for is_current, frames in found if frames]


def _fatal_stack(text: str) -> list[Frame]:
    """The thread that received the signal ("Current thread"), else the one that ran the cell."""
    return next((frames for is_current, frames in _stacks(text) if is_current), None) or _cell_stack(text)


def _cell_stack(text: str) -> list[Frame]:
    """The stack of the thread that ran the cell (its engine code), else the first one printed."""
    all_stacks = stacks(text)
    for stack in all_stacks:
        if any(f.function == "execute_cell" for f in stack):
            return stack
    return all_stacks[0] if all_stacks else []


def _located(stack: list[Frame]) -> tuple[str | None, str | None, str]:
    """(innermost vLLM frame as vllm/x.py:N, its function, the stack as text)."""
    engine = next(((f"{rel}:{f.line}", f.function) for f in stack if (rel := _engine_relative(f.file))), None)
    # Outermost first, like a Python traceback, so the innermost frames are the tail.
    text = "\n".join(f"  {f}" for f in reversed(stack[:STACK_LINES]))
    return (engine[0], engine[1], text) if engine else (None, None, text)


def _error(kind: str, message: str, *, stack: list[Frame] | None = None, signal: str | None = None,
           exit_code: int | None = None, origin: str = "log") -> ErrorInfo:
    stack = stack or []
    frame, function, stack_text = _located(stack)
    where = f" at {stack[0]}" if stack else ""
    normalized = normalise_message(message)
    return ErrorInfo(
        type=kind,
        message=f"{message}{where}"[:2000],
        frame=frame,
        normalized_message=normalized,
        # Signal and innermost engine frame: the same crash groups together across cells and versions.
        signature=signature_of(kind, normalized, frame, function),
        traceback_tail=stack_text,
        signal=signal,
        exit_code=exit_code,
        origin=origin,
    )


def crash_error(ray_error: str, log: str, *, memory_monitor: bool = False) -> ErrorInfo:
    """Why the cell's process died, as precisely as the evidence allows (see the module's table)."""
    memory = _MEMORY.findall(log)
    if memory:
        return _error("SIGKILL", memory[-1].removeprefix("farm: "), signal="SIGKILL")
    fatal = list(_FATAL.finditer(log))
    if fatal:
        what = fatal[-1].group("what")
        stack = _fatal_stack(log[fatal[-1].start():])
        return _error(FATAL_SIGNALS[what], f"{what} ({FATAL_SIGNALS[what]}) in the cell's process", stack=stack,
                      signal=FATAL_SIGNALS[what])
    if memory_monitor:
        return _error("SIGKILL", "killed by Ray's memory monitor: its node ran low on memory; "
                      f"give the cell resources.memory_gb to reserve what it needs. Ray: {first_line(ray_error, 500)}",
                      signal="SIGKILL", origin="ray")
    code = _EXIT_CODE.search(ray_error)
    if code:
        exit_code = int(code.group("code"))
        return _error(f"exit {exit_code}", f"the cell's process exited with code {exit_code}", exit_code=exit_code,
                      origin="ray")
    return _error("died", "the cell's process died without a word: killed from outside (SIGKILL, e.g. the kernel's "
                  f"OOM killer) or it called os._exit. Ray: {_ray_detail(ray_error)}", origin="ray")


def timeout_error(timeout_s: float, log: str) -> ErrorInfo:
    """A cell killed at its timeout; faulthandler dumped every thread just before, so it says where it hung."""
    dump = log.rfind("Timeout (")
    stack = _cell_stack(log[dump:]) if dump >= 0 else []
    return _error("timeout", f"no result within {timeout_s:g}s; the cell's actor was killed", stack=stack)


def infra_error(message: str, kind: str = "infra_error") -> ErrorInfo:
    """The farm could not run the cell (``infra_error``), or its engine env could not be prepared (``env_error``)."""
    return ErrorInfo(type=kind, message=message[:2000])


def lost_node(ray_error: BaseException) -> str | None:
    """Ray's words when the cell's actor (or its env's preparation task) is gone with its node or out of reach
    (infra), else None."""
    from ray.exceptions import ActorUnavailableError, NodeDiedError

    if isinstance(ray_error, ActorUnavailableError):
        return f"Ray lost contact with the cell's actor: {first_line(str(ray_error), 500)}"
    if isinstance(ray_error, NodeDiedError):  # what a task (not an actor) gets when its node dies under it
        return f"the cell's node died: {first_line(str(ray_error), 500)}"
    text = str(ray_error)
    for words in ("its node has died", "the node it was running on is dead", "node is dead"):
        if words in text:
            return f"the cell's node died: {_ray_detail(text)}"
    return None



def _ray_detail(text: str) -> str:
    """The informative sentence of an ActorDiedError: the one after the actor's id lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("\t")]
    detail = next((line for line in lines if "dead because" in line or "died because" in line), lines[-1] if lines else text)
    return detail.split(" Some common causes include")[0][:500]
