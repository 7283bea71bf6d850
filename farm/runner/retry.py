"""Which cells run again, and why: the retry policy, as pure functions of a cell's attempts.

Every attempt is its own result document (``attempt-N.json``, written once). After each,
the policy looks at the cell's attempts so far and says whether another one runs:

- **Infra outcomes** (``infra_error``, ``env_error``): the farm could not run the cell. Its
  node was lost, its actor could not be placed or started, its checkpoint is missing on its
  node, or its engine env (its vLLM version) could not be built there. That says nothing
  about the combination, so the cell runs again, on another node where there is one, until
  ``retries.infra_attempts`` such outcomes in this session; then it keeps its status and
  ``farm run`` exits 3. A ``farm run --resume`` starts a fresh budget: a person asked for
  another try.
- **A cold-start timeout**: a ``timeout`` of a cold attempt (``CellResult.cold_start``: the
  first engine build of its engine on its node in this run) says nothing about the
  combination either: a first build on a fresh node pays for cold compilation (kernel JIT,
  torch.compile, CUDA graphs), which a warm build does not. The cell runs again, on the same
  node where Ray can place it there (its caches are warm now), like an infra outcome: it
  counts toward ``retries.infra_attempts``, after which the cell keeps its ``timeout``. The
  retry is warm by definition (an attempt of that engine has ended on that node), even if the
  killed build left the caches half-filled: a timeout on a warm node is a verdict.
- **Verdicts that are not a pass** (``fail``, ``crash``, ``timeout`` on a warm node): the cell
  ran and did not pass. It runs ``retries.recheck`` more times (default once) to tell a broken
  combination from a flaky one: a pass on a recheck makes the cell ``flaky``, a second
  failure confirms the verdict (the latest attempt's status is the cell's).

Why crash and timeout are verdicts, not infra: a segfault in a kernel, an abort from a C++
assertion, an engine that hangs in its warm-up or needs more memory than its cell was given
are findings about that combination, as real as an exception; calling them infra would hide
exactly the bugs a farm exists to find. What would make them infra (the node died, Ray lost
the actor) is told apart before the policy sees them (``farm.runner.outcomes``): a lost node is an
infra outcome, never a crash. The recheck covers the rest (a neighbour that starved the node).

Resume needs no state beyond the store: ``decide`` on the attempts read back says which
cells still owe an attempt (never ran, infra, or a failure never rechecked).
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.model.results import CellResult, CellStatus
from farm.model.spec import Retries
from farm.text import first_line

# Not a pass, but a verdict: rerun to tell flaky from broken.
RECHECKED = (CellStatus.FAIL, CellStatus.CRASH, CellStatus.TIMEOUT)
# The farm could not run the cell: run it again elsewhere.
INFRA = (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR)


@dataclass(frozen=True)
class Decision:
    """Whether a cell runs again; ``reason`` becomes the next attempt's ``retry_reason``."""

    retry: bool
    reason: str | None = None
    infra: bool = False  # the retry is for an infra outcome: run it on another node
    prefer_node: str | None = None  # run it on this node if Ray can (a cold start's retry: its caches are warm)

    @classmethod
    def done(cls) -> Decision:
        return cls(False)


def decide(attempts: list[CellResult], retries: Retries, infra_outcomes: int) -> Decision:
    """What follows a cell's latest attempt.

    Args:
        attempts: the cell's attempts in this run, oldest first; the last one just ended.
        retries: the job's policy.
        infra_outcomes: infra outcomes (cold-start timeouts included) of this cell in this session, the last one
            included.
    """
    if not attempts:
        return Decision(True, None)
    last = attempts[-1]
    if last.status in INFRA:
        if infra_outcomes >= retries.infra_attempts:
            return Decision.done()
        return Decision(True, f"infra: attempt {last.attempt} was {_said(last)}; run again elsewhere", infra=True)
    if cold_timeout(last):
        if infra_outcomes >= retries.infra_attempts:
            return Decision.done()
        return Decision(True, f"cold start: attempt {last.attempt} timed out in the first engine build on its node; "
                              "compile caches are warm now", prefer_node=last.node_id)
    if last.status in RECHECKED:
        verdicts = [a for a in attempts if a.status.is_verdict() and not cold_timeout(a)]
        if len(verdicts) > retries.recheck:
            return Decision.done()
        return Decision(True, f"recheck: attempt {last.attempt} was {_said(last)}; run again to tell flaky from broken")
    return Decision.done()


def settle(result: CellResult, earlier: list[CellResult]) -> CellResult:
    """Give an attempt its history: the earlier attempts' summaries, and ``flaky`` for a pass after a failure."""
    result.previous_attempts = [a.summary() for a in earlier]
    if result.status is CellStatus.PASS and any(a.status in RECHECKED and not cold_timeout(a) for a in earlier):
        result.status = CellStatus.FLAKY
    return result


def cold_timeout(result: CellResult) -> bool:
    """A timeout of a cold attempt (its engine's first build on its node in the run): no verdict, retried."""
    return result.status is CellStatus.TIMEOUT and result.cold_start


def _said(result: CellResult) -> str:
    """``crash (SIGSEGV)``, ``fail (AssertionError)``, ``infra_error (node lost)``: what an attempt ended with."""
    error = result.error
    if error is None:
        return result.status.value
    detail = error.signal or (f"exit code {error.exit_code}" if error.exit_code is not None else None)
    if detail is None:
        detail = error.type if error.type != result.status.value else first_line(error.message, 80)
    return f"{result.status.value} ({detail})"

