"""A run against the previous run of the same job: classification, the store key, `farm diff`, the webhook."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from farm.model.cells import Cell
from farm.model.engines import CurrentEngine
from farm.model.results import CellResult, CellStatus, ErrorInfo, RunManifest, utcnow
from farm.report.aggregate import aggregate
from farm.report.diff import record_diff, summary
from farm.store import open_store, put_result, write_manifest
from farm.store.layout import diff_key

from .conftest import REPO
from .webhook_server import WebhookServer

T0 = utcnow().replace(microsecond=0) - timedelta(days=2)


def cell(model: str, engine: str = "nightly") -> Cell:
    return Cell(model=model, quantization="none", model_source="zoo:x", engine=CurrentEngine(name=engine))


def write_run(store, run_id: str, job: str, day: int, outcomes: list[tuple[Cell, CellStatus, str | None]]) -> None:
    """A finished, aggregated run: one result per cell with a status and a signature."""
    manifest = RunManifest(run_id=run_id, job_name=job, job={"name": job}, cells=[c for c, _, _ in outcomes],
                           launched_by="t@h", farm_version="0", started_at=T0 + timedelta(days=day), finished_at=T0 + timedelta(days=day))
    write_manifest(store, manifest, create=True)
    for c, status, signature in outcomes:
        # One message per signature: each is its own root cause, which is what a diff compares.
        error = ErrorInfo(type="E", message=f"error {signature}", signature=signature) if signature else None
        put_result(store, CellResult(run_id=run_id, cell_id=c.id, cell=c, status=status, error=error,
                                     env={"vllm": f"0.12.0.dev{day}"}, finished_at=utcnow()))
    aggregate(store, run_id)


P, F = CellStatus.PASS, CellStatus.FAIL


@pytest.fixture
def two_nights(tmp_path):
    store = open_store(str(tmp_path / "store"))
    write_run(store, "night-1", "nightly", 0, [
        (cell("regresses"), P, None), (cell("fixed"), F, "aaaa"), (cell("new-cause"), F, "aaaa"),
        (cell("env-broke"), P, None), (cell("steady"), P, None), (cell("steady-fail"), F, "bbbb"),
        (cell("dropped"), P, None),
    ])
    assert record_diff(store, "night-1").previous_run is None
    # Another job's run in between is never this job's previous run.
    write_run(store, "other-1", "other", 1, [(cell("regresses"), F, "cccc")])
    record_diff(store, "other-1")
    write_run(store, "night-2", "nightly", 1, [
        (cell("regresses"), F, "cccc"), (cell("fixed"), P, None), (cell("new-cause"), F, "dddd"),
        (cell("env-broke"), CellStatus.ENV_ERROR, None), (cell("steady"), P, None), (cell("steady-fail"), F, "bbbb"),
        (cell("new-engine", "v0.13.0"), P, None),
    ])
    return store


def test_regressions_fixes_and_everything_else(two_nights):
    diff = record_diff(two_nights, "night-2")
    assert (diff.previous_run, diff.job_name, diff.schema_version) == ("night-1", "nightly", 1)
    assert [c.model for c in diff.regressions] == ["regresses"]
    assert [c.model for c in diff.fixes] == ["fixed"]
    assert [c.model for c in diff.other] == ["new-cause", "env-broke"]
    assert [c.model for c in diff.added] == ["new-engine"] and [c.model for c in diff.removed] == ["dropped"]
    assert diff.counts == {"regressions": 1, "fixes": 1, "other": 2, "added": 1, "removed": 1, "unchanged": 2}
    regression = diff.regressions[0]
    assert (regression.before, regression.after, regression.after_signature) == ("pass", "fail", "cccc")
    assert (regression.before_vllm, regression.after_vllm) == ("0.12.0.dev0", "0.12.0.dev1")
    assert regression.result_key == f"runs/night-2/cells/{cell('regresses').id}/attempt-1.json"
    assert diff.removed[0].after is None and diff.added[0].before is None


def test_the_diff_is_in_the_store_next_to_the_run(two_nights):
    record_diff(two_nights, "night-2")
    assert diff_key("night-2") == "runs/night-2/diff.json"
    stored = json.loads(two_nights.get("runs/night-2/diff.json"))
    assert stored["previous_run"] == "night-1" and stored["counts"]["regressions"] == 1
    assert stored["previous_matrix_key"] == "matrix/night-1.json" and stored["matrix_key"] == "matrix/night-2.json"
    # The same comparison the page shows: matrix.json's changes (farm.report.history).
    matrix = json.loads(two_nights.get("matrix/night-2.json"))
    assert [c["cell_id"] for c in matrix["changes"]["regressions"]] == [c["cell_id"] for c in stored["regressions"]]
    # Recorded again (a resumed run): replaced, against the same previous run, never against itself.
    assert record_diff(two_nights, "night-2").previous_run == "night-1"


def test_the_summary_names_each_change_with_both_sides(two_nights):
    text = summary(record_diff(two_nights, "night-2"), page="page: /x/index.html")
    lines = text.splitlines()
    assert lines[0] == ("farm nightly: run night-2 against night-1: 1 regression(s), 1 fix(es), 2 other change(s), "
                        "1 added, 1 removed, 2 unchanged")
    assert "  regresses/none/none/nightly: pass (vllm 0.12.0.dev0) → fail [cccc] (vllm 0.12.0.dev1)" in lines
    assert lines[lines.index("Fixes:") + 1].startswith("  fixed/none/none/nightly: fail [aaaa]")
    assert lines[-1] == "page: /x/index.html"


def test_farm_diff_prints_and_posts_to_a_webhook(farm_cli, two_nights):
    record_diff(two_nights, "night-2")
    with WebhookServer() as hook:
        code, out, err = farm_cli("diff", "--store", two_nights.url, "--webhook", hook.url)
        assert code == 0, err
        assert out.startswith("farm nightly: run night-2 against night-1: 1 regression(s)")
        assert len(hook.posts) == 1 and hook.posts[0]["content_type"] == "application/json"
        assert hook.posts[0]["path"] == "/services/T0/B0/secret"
        assert hook.posts[0]["json"] == {"text": out.rstrip("\n")}  # Slack's {"text": ...}, nothing else

        hook.status = 500
        code, out, err = farm_cli("diff", "night-1", "--store", two_nights.url, env={"FARM_WEBHOOK_URL": hook.url})
        assert code == 1 and "first run in this store" in out
        assert err == f"farm: error: webhook at {hook.url.split('/')[2]} answered HTTP 500; check --webhook / $FARM_WEBHOOK_URL\n"
        assert "secret" not in err, "a webhook URL's path is its secret: never printed"

    code, out, _ = farm_cli("diff", "night-2", "--json", "--store", two_nights.url)
    assert json.loads(out)["regressions"][0]["cell_id"] == cell("regresses").id


def test_webhook_and_diff_misuse_is_one_line(farm_cli, tmp_path, two_nights):
    code, _, err = farm_cli("diff", "--store", two_nights.url, "--webhook", "hooks.slack.com/x")
    assert code == 1 and err.startswith("farm: error: --webhook / $FARM_WEBHOOK_URL: 'hooks.slack.com/x' is not an http(s) URL")
    code, out, err = farm_cli("run", str(REPO / "jobs" / "smoke.yaml"), "--webhook", "ftp://x")
    assert code == 1 and "is not an http(s) URL" in err and err.count("\n") == 1
    code, _, err = farm_cli("diff", "night-2", "--store", str(tmp_path / "empty"))
    assert code == 1 and "does not exist in the store" in err
    # A run aggregated by the library, not `farm run`: said so, and how to write its diff.
    store = open_store(str(tmp_path / "old"))
    write_run(store, "old-1", "nightly", 0, [(cell("x"), P, None)])
    code, _, err = farm_cli("diff", "--store", store.url)
    assert code == 1 and "`farm diff old-1 --record`" in err and err.count("\n") == 1
    code, out, _ = farm_cli("diff", "--record", "--store", store.url)
    assert code == 0 and "first run in this store" in out
