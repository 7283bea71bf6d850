"""The search of `farm bisect` (see farm.ops.bisect), apart from the store and the driver.

It sees candidates only through ``observe``, so it is tested with a fake outcome oracle over
a thousand candidates, and ``farm.ops.bisect`` keeps what runs engines and writes the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from farm.errors import BisectError
from farm.model.results import CellResult, CellStatus, Document
from farm.model.verdicts import root_cause


@dataclass(frozen=True)
class Outcome:
    """What a cell's result says about its engine: a status and its root cause."""

    status: str
    cause: str = ""  # the failure's root cause (farm.model.verdicts), or the probes that failed; "" for a pass

    @property
    def verdict(self) -> bool:
        return CellStatus.names_verdict(self.status)

    def __str__(self) -> str:
        return self.status + (f" [{self.cause}]" if self.cause else "")

    @classmethod
    def of(cls, result: CellResult) -> Outcome:
        # The root cause, not the signature: the same bug on a line that moved between releases is no change.
        cause = root_cause(result.error) or ",".join(p.name for p in result.probes if p.failed)
        return cls(result.status.value, cause or "")


@dataclass
class Observation:
    outcome: Outcome
    source: str  # "ran" (this bisection ran it) or "store" (reused)
    run_id: str | None = None
    seconds: float | None = None


class Step(Document):
    index: int
    candidate: str
    outcome: str
    status: str
    source: str
    judged: str  # "good", "changed", "third" (changed, to neither end's outcome), "skipped", "end"
    run_id: str | None = None
    seconds: float | None = None


# (result, last_good, first_changed, steps, skipped, monotonic, notes), as ``search`` returns them
Found = tuple[str, int | None, int | None, list[Step], list[str], bool, list[str]]


def search(
    candidates: Sequence[str],
    good: int,
    bad: int,
    observe: Callable[[int], Observation],
    *,
    known: dict[int, list[Outcome]] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> Found:
    """Binary search between two candidate indexes for the first whose outcome differs from ``good``'s.

    ``observe(i)`` returns the outcome at candidate ``i`` (running it or reusing a result);
    ``known`` holds outcomes already seen per index (the store's), for the monotonicity check.
    Returns (result, last_good, first_changed, steps, skipped, monotonic, notes).
    """
    if not 0 <= good < bad < len(candidates):
        raise BisectError("--good must come before --bad in the candidates' order (oldest first)")
    steps: list[Step] = []
    seen: dict[int, Outcome] = {}

    def step(i: int, judge: Callable[[Outcome], str]) -> Outcome:
        observation = observe(i)
        seen[i] = observation.outcome
        judged = judge(observation.outcome)
        steps.append(Step(index=i, candidate=candidates[i], outcome=str(observation.outcome),
                          status=observation.outcome.status, source=observation.source, judged=judged,
                          run_id=observation.run_id, seconds=observation.seconds))
        took = f", {observation.seconds:.0f}s" if observation.seconds is not None else ""
        where = f" (run {observation.run_id}{took})" if observation.run_id else ""
        say(f"[{len(steps)}] {candidates[i]:<14} {str(observation.outcome):<28} {judged:<8} "
            f"{'ran' if observation.source == 'ran' else 'from the store'}{where}")
        return observation.outcome

    good_outcome = _end_outcome(step, candidates, good, "--good")
    bad_outcome = _end_outcome(step, candidates, bad, "--bad")
    if bad_outcome == good_outcome:
        return "no_change", None, None, steps, [], True, []

    def judge(outcome: Outcome) -> str:
        if not outcome.verdict:
            return "skipped"
        if outcome == good_outcome:
            return "good"
        return "changed" if outcome == bad_outcome else "third"

    lo, hi, skipped = _narrow(good, bad, lambda i: judge(step(i, judge)))
    notes = _third_outcome_notes(steps, good_outcome, bad_outcome)
    disagreements = _monotonic_notes(candidates, known, seen, lo, hi, good_outcome)
    notes += disagreements
    skipped_between = [candidates[i] for i in sorted(skipped) if lo < i < hi]
    return ("range" if skipped_between else "found"), lo, hi, steps, skipped_between, not disagreements, notes


def _end_outcome(step: Callable[[int, Callable[[Outcome], str]], Outcome], candidates: Sequence[str], i: int,
                 flag: str) -> Outcome:
    """An end must have a verdict: the search compares every other outcome with the ends'."""
    outcome = step(i, lambda o: "end")
    if not outcome.verdict:
        raise BisectError(f"{flag} {candidates[i]}: the cell has no verdict there ({outcome}); "
                          f"pick a {flag} whose env builds and whose cell runs")
    return outcome


def _narrow(good: int, bad: int, judged: Callable[[int], str]) -> tuple[int, int, set[int]]:
    """Halve (last good, first changed) until only skipped candidates lie between; ``judged(i)`` observes ``i``."""
    lo, hi = good, bad
    skipped: set[int] = set()
    while True:
        between = [i for i in range(lo + 1, hi) if i not in skipped]
        if not between:
            break
        middle = (lo + hi) / 2
        i = min(between, key=lambda j: (abs(j - middle), j))
        verdict = judged(i)
        if verdict == "skipped":
            skipped.add(i)
        elif verdict == "good":
            lo = i
        else:
            hi = i
    return lo, hi, skipped


def _third_outcome_notes(steps: list[Step], good_outcome: Outcome, bad_outcome: Outcome) -> list[str]:
    """A third outcome means more than one change between the ends: the verdict names the first one only."""
    notes = []
    thirds = [s for s in steps if s.judged == "third"]
    if thirds:
        notes.append(f"a third outcome: {', '.join(f'{s.outcome} at {s.candidate}' for s in thirds)}, neither --good's "
                     f"({good_outcome}) nor --bad's ({bad_outcome}); the combination changed more than once "
                     "between the ends: this is the first change away from --good")
    return notes


def _monotonic_notes(candidates: Sequence[str], known: dict[int, list[Outcome]] | None, seen: dict[int, Outcome],
                     lo: int, hi: int, good_outcome: Outcome) -> list[str]:
    """A note per outcome seen (the store's too) that disagrees with one change at ``hi``; none: monotonic.

    A binary search trusts that the outcome changes once; the reused results are what can show it did not.
    """
    notes = []
    observed: dict[int, list[Outcome]] = {i: list(v) for i, v in (known or {}).items()}
    for i, outcome in seen.items():
        observed.setdefault(i, []).append(outcome)
    for i in sorted(observed):
        for outcome in observed[i]:
            if not outcome.verdict:
                continue
            if i >= hi and outcome == good_outcome:
                notes.append(f"not monotonic: {candidates[i]} gives --good's outcome ({good_outcome}) after the change "
                             f"at {candidates[hi]}; the outcome flips back and forth (flaky, or fixed and broken again)")
            elif i <= lo and outcome != good_outcome:
                notes.append(f"not monotonic: {candidates[i]} gives {outcome} before the last good {candidates[lo]}")
    return notes
