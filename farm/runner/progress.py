"""What ``farm run`` shows while cells run, and the summary at the end.

One line per finished cell and per retry, always (a log, in CI or a terminal)::

    [3/12] ✓ pass        qwen2-dense/none/none/current 14.2s
           ↻ crash       m/segv/none/fi attempt 1 → 2: recheck: attempt 1 was crash (SIGSEGV); …

On a terminal, a live line under them: counts per status, cells running, done/total and
an ETA (the mean time of the attempts so far × what is left ÷ cells at once)::

    [3/12] ✓ 2 pass  ☠ 1 crash  · 4 running  ETA 1m05s

The mean leaves cold attempts out (``CellResult.cold_start``: the first engine build of
an engine on a node, which pays for JIT compilation a warm build does not) once there is
a warm one: the first wave of a run is all cold, and its minutes would otherwise be
taken for the pace of every cell after it. Until a warm attempt has ended, the cold ones
are all there is to go by (an ETA on the high side).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from farm.model.results import AttemptSummary, CellResult, CellStatus
from farm.runner.attempt import Event, EventKind
from farm.text import first_line


class Progress:
    def __init__(self, total: int = 0, *, stream: TextIO | None = None, live: bool | None = None,
                 parallel: int = 1) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.parallel = max(1, parallel)
        self.done = 0
        self.counts: dict[CellStatus, int] = {}
        self.running: dict[tuple[str, int], float] = {}  # (cell id, attempt) → when it started
        self.durations: list[tuple[float, bool]] = []  # (seconds, cold start) per attempt that ended
        self._drawn = False

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.PLAN:
            self.total, self.parallel = event.total, max(1, event.parallel)
            if event.reason:  # what bounds the cells at once, where the cells ask for more than one resource
                self._print(f"{self.total} cells, {self.parallel} at once ({event.reason})")
        elif event.kind is EventKind.STARTED and event.cell is not None:
            self.running[(event.cell.id, event.attempt)] = time.monotonic()
        elif event.kind in ("done", "retry") and event.result is not None:
            self._ended(event)
        if self.live:
            self._draw()

    def _ended(self, event: Event) -> None:
        result = event.result
        assert result is not None
        began = self.running.pop((result.cell_id, result.attempt), None)
        if began is not None:
            self.durations.append((time.monotonic() - began, result.cold_start))
        if event.kind is EventKind.DONE:
            self.done += 1
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            self._print(f"[{self.done}/{self.total}] {result.status.symbol} {result.status.value:<11} "
                        f"{result.cell.label}{_took(result)}{_attempts(result)}")
        else:
            self._print(f"{'':>{len(str(self.total)) * 2 + 3}} ↻ {result.status.value:<11} {result.cell.label} "
                        f"attempt {result.attempt} → {result.attempt + 1}: {event.reason}")

    def _print(self, line: str) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def status_line(self) -> str:
        parts = [f"{s.symbol} {n} {s.value}" for s, n in sorted(self.counts.items(), key=lambda kv: _ORDER[kv[0]])]
        if self.running:
            parts.append(f"· {len(self.running)} running")
        return f"[{self.done}/{self.total}] {'  '.join(parts) or 'starting'}  ETA {self.eta()}"

    def eta(self) -> str:
        if not self.durations:
            return "—"
        left = self.total - self.done
        warm = [seconds for seconds, cold in self.durations if not cold]
        pace = warm or [seconds for seconds, _ in self.durations]
        seconds = sum(pace) / len(pace) * math.ceil(left / self.parallel)
        if self.running:  # the cells running now are part-way through
            now = time.monotonic()
            seconds -= min(now - began for began in self.running.values())
        return _duration(max(0.0, seconds))

    def _draw(self) -> None:
        self.stream.write("\r\033[K" + self.status_line())
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


_ORDER = {status: index for index, status in enumerate(CellStatus)}


def summary_table(results: list[CellResult]) -> str:
    """Per status: cells, and how many needed more than one attempt; then every cell that did not simply pass."""
    rows = [("status", "cells", "retried")]
    by_status: dict[CellStatus, list[CellResult]] = {}
    for result in results:
        by_status.setdefault(result.status, []).append(result)
    for status in sorted(by_status, key=lambda s: _ORDER[s]):
        group = by_status[status]
        rows.append((f"{status.symbol} {status.value}", str(len(group)), str(sum(1 for r in group if r.attempt > 1))))
    rows.append(("total", str(len(results)), str(sum(1 for r in results if r.attempt > 1))))
    lines = _table(rows, right=(1, 2))
    notable = [r for r in sorted(results, key=lambda r: r.cell.label) if r.status is not CellStatus.PASS or r.attempt > 1]
    if notable:
        lines.append("")
        detail = [("cell", "status", "attempts", "why")]
        for result in notable:
            history = [_said(a) for a in result.previous_attempts] + [result.status.value]
            detail.append((result.cell.label, result.status.value, " → ".join(history), _why(result)))
        lines += _table(detail)
    return "\n".join(lines)


def _said(attempt: AttemptSummary) -> str:
    """An earlier attempt's status; a cold-start timeout (no verdict, ``farm.runner.retry``) says so."""
    cold = attempt.cold_start and attempt.status is CellStatus.TIMEOUT
    return f"{attempt.status.value} (cold start)" if cold else attempt.status.value


def _why(result: CellResult) -> str:
    if result.error is not None:
        first = first_line(result.error.message)
        return f"{result.error.type}: {first}"[:120]
    failed = [a for a in result.previous_attempts if a.error]
    return (failed[-1].error or "")[:120] if failed else ""


def _table(rows: Sequence[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _took(result: CellResult) -> str:
    seconds = result.timings.get("total")
    return f" {seconds:.1f}s" if seconds is not None else ""


def _attempts(result: CellResult) -> str:
    return f" (attempt {result.attempt})" if result.attempt > 1 else ""


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
