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

**No wasted rechecks.** A recheck runs only where history cannot decide. A failure whose root cause
this cell already failed with in an earlier run of the job (same cell id: the same engine) is settled,
and so is a ``refused`` failure at engine build (vLLM declining a configuration does so every time);
a new root cause is still rechecked. Flakiness is judged over history too: a cell whose verdict flips
in at least 5 % of its recent runs on one vLLM version (Ray's release tests use the same rule) is
``flaky``, and always rechecked.

Resume needs no state beyond the store: ``decide`` on the attempts read back says which
cells still owe an attempt (never ran, infra, or a failure never rechecked).
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.cell import gpu_share
from farm.model.results import CellResult, CellStatus
from farm.model.spec import Retries
from farm.model.verdicts import FailureKind, failure_kind, root_cause
from farm.text import first_line

# Not a pass, but a verdict: rerun to tell flaky from broken.
RECHECKED = (CellStatus.FAIL, CellStatus.CRASH, CellStatus.TIMEOUT)
# The farm could not run the cell: run it again elsewhere.
INFRA = (CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR)


FLAKY_FLIP_RATE = 0.05  # of a cell's recent runs on one vLLM version whose verdict differs from the run before
FLAKY_MIN_RUNS = 5  # fewer runs say nothing about a rate


@dataclass(frozen=True)
class Known:
    """What earlier runs of the job say about a cell: the root causes it failed with, and how often its verdict
    flipped between runs on one vLLM version."""

    causes: frozenset[str] = frozenset()
    flip_rate: float = 0.0

    @property
    def flaky(self) -> bool:
        return self.flip_rate >= FLAKY_FLIP_RATE


def known_from(runs: list[tuple[str, str | None, str | None]]) -> Known:
    """``runs``: the cell's (status, root cause, vLLM version) in earlier runs, oldest first."""
    causes = frozenset(cause for status, cause, _ in runs if cause and status in {s.value for s in RECHECKED})
    verdicts = [(status, cause, vllm) for status, cause, vllm in runs if CellStatus(status).is_verdict()]
    pairs = [(a, b) for a, b in zip(verdicts, verdicts[1:]) if a[2] == b[2]]  # a new version is no flip
    if len(pairs) + 1 < FLAKY_MIN_RUNS:
        return Known(causes)
    flips = sum(1 for a, b in pairs if (a[0], a[1]) != (b[0], b[1]))
    return Known(causes, flips / len(pairs))


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


def decide(attempts: list[CellResult], retries: Retries, infra_outcomes: int, known: Known = Known()) -> Decision:
    """What follows a cell's latest attempt.

    Args:
        attempts: the cell's attempts in this run, oldest first; the last one just ended.
        retries: the job's policy.
        infra_outcomes: infra outcomes (cold-start timeouts included) of this cell in this session, the last one
            included.
        known: what earlier runs of the job say about the cell (``known_from``).
    """
    if not attempts:
        return Decision(True, None)
    last = attempts[-1]
    if last.status in INFRA:
        if infra_outcomes >= retries.infra_attempts:
            return Decision.done()
        if last.error is not None and last.error.origin == gpu_share.ORIGIN:
            return Decision(True, f"GPU share: attempt {last.attempt} ran out of GPU memory in its share; "
                                  "run again on a whole GPU", infra=True)
        return Decision(True, f"infra: attempt {last.attempt} was {_said(last)}; run again elsewhere", infra=True)
    if cold_timeout(last):
        if infra_outcomes >= retries.infra_attempts:
            return Decision.done()
        return Decision(True, f"cold start: attempt {last.attempt} timed out in the first engine build on its node; "
                              "compile caches are warm now", prefer_node=last.node_id)
    if last.status in RECHECKED:
        verdicts = [a for a in attempts if a.status.is_verdict() and not cold_timeout(a)]
        if len(verdicts) > retries.recheck or settled(last, known):
            return Decision.done()
        return Decision(True, f"recheck: attempt {last.attempt} was {_said(last)}; run again to tell flaky from broken")
    return Decision.done()


def settled(failure: CellResult, known: Known) -> str | None:
    """Why a failure needs no recheck (history or its kind decides it), or None."""
    if known.flaky or failure.error is None:
        return None
    if failure_kind(failure.status, failure.error) is FailureKind.REFUSED and failure.error.probe is None:
        return "refused at engine build: vLLM declines a configuration every time"
    if root_cause(failure.error) in known.causes:
        return "the root cause it failed with in an earlier run of the job"
    return None


def settle(result: CellResult, earlier: list[CellResult], known: Known = Known()) -> CellResult:
    """Give an attempt its history: the earlier attempts' summaries, and ``flaky`` for a pass after a failure, or
    for any verdict of a cell whose recent runs flip (``Known.flaky``)."""
    result.previous_attempts = [a.summary() for a in earlier]
    failed_before = any(a.status in RECHECKED and not cold_timeout(a) for a in earlier)
    a_verdict = result.status is CellStatus.PASS or (result.status in RECHECKED and not cold_timeout(result))
    if (result.status is CellStatus.PASS and failed_before) or (known.flaky and a_verdict):
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

