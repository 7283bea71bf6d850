"""A run against the previous run of the same job, as its own document, in text, and to a chat webhook.

Aggregation already compares each run with the previous run of its job
(``farm.report.history``: ``matrix.json``'s ``changes``, what the page shows). After ``farm run``,
``record_diff`` writes the same comparison as a standalone document next to the run,

    runs/<run_id>/diff.json

small enough for a script, a cron job or a chat bot to read without the matrix, and
``summary`` turns it into the text the terminal and the webhook show.

The document (``RunDiff``, ``schema_version`` 1; readers ignore keys they do not know):

    job_name, run_id, started_at, matrix_key     this run
    previous_run, previous_started_at,           the run it is compared with: the job's newest
    previous_matrix_key                          earlier run in this store (null for its first run;
                                                 every list is then empty)
    regressions  [Change]   down the verdict ladder pass → flaky → fail | crash | timeout
    fixes        [Change]   up it
    other        [Change]   any other change of status or root cause: one failure for another
                            (or a new signature), or to or from a status that is no verdict
                            (infra_error, env_error, unsupported, pending)
    added        [Change]   cells this run has and the previous one did not (a new engine …)
    removed      [Change]   the reverse
    counts       {regressions, fixes, other, added, removed, unchanged}: numbers of cells

A ``Change`` names the cell (``cell_id``, ``model``, ``quantization``, ``lora``, ``engine``,
``row``, ``column``) and both sides: ``before`` / ``after`` status (null where that run
lacks the cell), ``before_signature`` / ``after_signature``, ``before_vllm`` / ``after_vllm``
(the version each run measured: a nightly's moves), and ``result_key``, this run's
result. Cells are matched by id, so a combination on a renamed engine is removed + added.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from pydantic import Field

from farm.errors import KeyNotFound, StoreError, WebhookError
from farm.model.cells import cell_label
from farm.model.matrix import Change as HistoryChange
from farm.model.matrix import Matrix
from farm.model.results import Document, utcnow
from farm.report.aggregate import load_matrix
from farm.store import Store, matrix_key
from farm.store.layout import diff_key

DIFF_SCHEMA_VERSION = 1
WEBHOOK_TIMEOUT_S = 10  # a chat server that does not answer must not hold the run's exit
LISTED_IN_SUMMARY = 10  # changes per kind named in the text (the document has them all)
KINDS = ("regressions", "fixes", "other", "added", "removed")


class Change(HistoryChange):
    """farm.report.history's change of one cell, with the cell's axes and this run's result key."""

    model: str = ""
    quantization: str = ""
    lora: str = ""
    engine: str = ""
    result_key: str | None = None

    @property
    def label(self) -> str:
        return cell_label(self.model, self.quantization, self.lora, self.engine) if self.model else self.cell_id

    def describe(self) -> str:
        def side(status: str | None, signature: str | None, vllm: str | None) -> str:
            if status is None:
                return "absent"
            return status + (f" [{signature}]" if signature else "") + (f" (vllm {vllm})" if vllm else "")

        return (f"{self.label}: {side(self.before, self.before_signature, self.before_vllm)} → "
                f"{side(self.after, self.after_signature, self.after_vllm)}")


class RunDiff(Document):
    schema_version: int = DIFF_SCHEMA_VERSION
    job_name: str
    run_id: str
    started_at: str | None = None
    matrix_key: str
    generated_at: str
    previous_run: str | None = None
    previous_started_at: str | None = None
    previous_matrix_key: str | None = None
    regressions: list[Change] = Field(default_factory=list)
    fixes: list[Change] = Field(default_factory=list)
    other: list[Change] = Field(default_factory=list)
    added: list[Change] = Field(default_factory=list)
    removed: list[Change] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)



def of_matrix(matrix: Matrix) -> RunDiff:
    """The run's changes since the previous run of its job (from aggregation), as a standalone document."""
    changes = matrix.changes
    result = RunDiff(job_name=matrix.job_name, run_id=matrix.run_id, started_at=matrix.started_at,
                     matrix_key=matrix.matrix_key or matrix_key(matrix.run_id),
                     generated_at=utcnow().isoformat(timespec="seconds"))
    if changes is None or changes.previous_run is None:
        result.counts = dict.fromkeys([*KINDS, "unchanged"], 0)  # the job's first run: nothing to compare
        return result
    result.previous_run = changes.previous_run
    result.previous_started_at = changes.previous_started_at
    result.previous_matrix_key = matrix_key(changes.previous_run)
    cells = {c.cell_id: c for c in matrix.cells}
    for kind in KINDS:
        enriched = []
        for change in getattr(changes, kind):
            cell = cells.get(change.cell_id)
            axes = {"model": cell.model, "quantization": cell.quantization, "lora": cell.lora, "engine": cell.engine,
                    "result_key": cell.result_key} if cell else _axes_of(change)
            enriched.append(Change(**change.model_dump(), **axes))
        setattr(result, kind, enriched)
    changed = {c.cell_id for kind in ("regressions", "fixes", "other", "added") for c in getattr(result, kind)}
    result.counts = {kind: len(getattr(result, kind)) for kind in KINDS}
    result.counts["unchanged"] = sum(1 for c in matrix.cells if c.cell_id not in changed)
    return result


def _axes_of(change: HistoryChange) -> dict[str, str]:
    """A removed cell is not in this run's matrix: its axes from its row and column labels."""
    model, _, quantization = change.row.partition(" · ")
    lora, _, engine = change.column.rpartition(" · ")
    return {"model": model, "quantization": quantization, "lora": lora, "engine": engine}


def record_diff(store: Store, run_id: str) -> RunDiff:
    """Write ``runs/<run_id>/diff.json`` from the run's matrix (replaced when a resumed run is aggregated again)."""
    result = of_matrix(load_matrix(store, run_id))
    store.put(diff_key(run_id), result.model_dump_json(indent=1).encode(), overwrite=True)
    return result


def load_diff(store: Store, run_id: str | None = None) -> RunDiff:
    """A run's diff (default: of the run ``matrix/latest.json`` shows)."""
    run_id = run_id or load_matrix(store).run_id
    try:
        return RunDiff.model_validate_json(store.get(diff_key(run_id)))
    except KeyNotFound:
        load_matrix(store, run_id)  # no such run (or not aggregated): that error, which names the matrix's key
        raise StoreError(f"run {run_id} has no {diff_key(run_id)} in {store.url}; `farm diff {run_id} --record` "
                         "writes it from the run's matrix") from None


def summary(diff: RunDiff, *, page: str | None = None) -> str:
    """The diff in a few lines of text: the terminal's and the webhook's."""
    head = f"farm {diff.job_name}: run {diff.run_id}"
    if diff.previous_run is None:
        return f"{head}: the job's first run in this store; nothing to compare" + (f"\n{page}" if page else "")
    c = diff.counts
    lines = [f"{head} against {diff.previous_run}: {c.get('regressions', 0)} regression(s), {c.get('fixes', 0)} fix(es), "
             f"{c.get('other', 0)} other change(s), {c.get('added', 0)} added, {c.get('removed', 0)} removed, "
             f"{c.get('unchanged', 0)} unchanged"]
    for title, changes in (("Regressions", diff.regressions), ("Fixes", diff.fixes), ("Other changes", diff.other)):
        if changes:
            lines.append(f"{title}:")
            lines += [f"  {change.describe()}" for change in changes[:LISTED_IN_SUMMARY]]
            if len(changes) > LISTED_IN_SUMMARY:
                lines.append(f"  … and {len(changes) - LISTED_IN_SUMMARY} more")
    if page:
        lines.append(page)
    return "\n".join(lines)


def check_webhook(url: str) -> str:
    """A webhook URL as given, or a one-line error before anything runs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise WebhookError(f"--webhook / $FARM_WEBHOOK_URL: {url[:40]!r} is not an http(s) URL; give the chat's "
                        "incoming-webhook URL, e.g. https://hooks.slack.com/services/…")
    return url


def post_webhook(url: str, text: str) -> None:
    """POST ``{"text": text}``: Slack's incoming-webhook format (Mattermost and Rocket.Chat take it too).

    Raises:
        WebhookError: the server refused or could not be reached; names the host, never the URL's path
            (a Slack webhook's path is its secret).
    """
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    host = urllib.parse.urlparse(url).netloc
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"webhook at {host} answered HTTP {exc.code}; check --webhook / $FARM_WEBHOOK_URL") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"webhook at {host} could not be reached ({reason}); check --webhook / $FARM_WEBHOOK_URL") from None
