"""The aggregated matrix as a document: what ``matrix.json`` holds, and the page and ``farm matrix`` read.

Rows are model × quantization, columns LoRA × engine; failures are grouped by signature;
a run's history strips and its changes against the previous run, and the version groups
and first changes along the engines, ride along. Built by ``farm.report.aggregate``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from farm.model.results import SCHEMA_VERSION, CellStatus, Document, EnvFacts


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EngineGroup(_Doc):
    """One engine's columns, side by side with the other versions'."""

    engine: str
    kind: str = "current"
    platform: str | None = None  # in a matrix merged from runs on several platforms, the run's (farm.model.platforms)
    columns: list[str] = Field(default_factory=list)
    vllm: list[str] = Field(default_factory=list)  # the versions its cells measured (one, unless nodes differ)
    vllm_commit: list[str] = Field(default_factory=list)
    vllm_dist: list[str] = Field(default_factory=list)


class VersionChange(_Doc):
    """A combination whose outcome changed between two engines next to each other in the job's order."""

    row: str
    lora: str
    model: str
    quantization: str
    engine: str  # the first engine, in the job's order, where the outcome differs from the one before
    previous_engine: str
    before: str  # statuses
    after: str
    before_signature: str | None = None
    after_signature: str | None = None
    before_root_cause: str | None = None
    after_root_cause: str | None = None
    before_vllm: str | None = None
    after_vllm: str | None = None
    changes: int = 1  # how many times the outcome changed along all the engines
    platform: str | None = None  # versions are compared on one platform at a time


class PlatformOutcome(_Doc):
    """A combination's verdict on one platform, in a matrix merged from runs on several."""

    platform: str
    engine: str
    cell_id: str
    vllm: str | None = None
    status: str
    kind: str | None = None
    root_cause: str | None = None
    signature: str | None = None


class PlatformDifference(_Doc):
    """A combination whose verdict differs by platform.

    ``release``: the vLLM release measured on each platform compared, which makes the platform the only
    difference; None when no release was measured on two of them, and each platform's newest release is
    compared (a difference then may be the version's as well).
    """

    row: str
    lora: str
    model: str
    quantization: str
    release: str | None = None
    outcomes: list[PlatformOutcome] = Field(default_factory=list)


HISTORY_WINDOW = 10  # runs per strip: ten nightlies fit a glance and keep a 2000-cell page light


class CellSnapshot(Document):
    """One cell in one run, as much as history and diffs need."""

    status: str  # a str, not CellStatus: a summary written by a newer farm may hold a status this one lacks
    row: str
    column: str
    signature: str | None = None
    root_cause: str | None = None  # what a diff compares: a new variant of the same bug is no change
    vllm: str | None = None
    seconds: float | None = None  # the attempt's run time (timings.total): the next run's longest-first order


class RunSummary(Document):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    job_name: str
    started_at: str
    finished_at: str | None = None
    matrix_key: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    cells: dict[str, CellSnapshot] = Field(default_factory=dict)

    def versions(self) -> dict[str, list[str]]:
        """Engine column → the vLLM versions its cells measured in this run (usually one)."""
        found: dict[str, set[str]] = {}
        for snap in self.cells.values():
            if snap.vllm:
                found.setdefault(snap.column.rsplit(" · ", 1)[-1], set()).add(snap.vllm)
        return {engine: sorted(versions) for engine, versions in sorted(found.items())}


class HistoryRun(Document):
    run_id: str
    started_at: str
    finished_at: str | None = None
    matrix_key: str = ""
    counts: dict[str, int] = Field(default_factory=dict)
    versions: dict[str, list[str]] = Field(default_factory=dict)  # engine → vLLM versions measured


class History(Document):
    """The last runs of a job, oldest first; the last one is this run.

    ``cells`` maps each cell of this run to its strip: one status symbol per run in
    ``runs`` (see the matrix's ``legend``), a space where that run did not have the cell.
    ``signature_since`` maps each failure signature of this run to the first run of the
    unbroken streak of runs in which it appears.
    """

    window: int = HISTORY_WINDOW
    runs: list[HistoryRun] = Field(default_factory=list)
    cells: dict[str, str] = Field(default_factory=dict)
    signature_since: dict[str, str] = Field(default_factory=dict)


class Change(Document):
    cell_id: str
    row: str
    column: str
    before: str | None = None  # status in the previous run; None: that run did not have the cell
    after: str | None = None  # status in this run; None: this run does not have the cell
    before_signature: str | None = None
    after_signature: str | None = None
    before_vllm: str | None = None
    after_vllm: str | None = None


class Changes(Document):
    """This run against the previous run of the same job.

    A regression goes down the verdict ladder pass → flaky → fail/crash/timeout, a fix
    up it. ``other`` holds every other status change: one failure for another (or the
    same status with a new signature), or to or from a status that is no verdict
    (not run, infra or env error, unsupported).
    """

    previous_run: str | None = None
    previous_started_at: str | None = None
    regressions: list[Change] = Field(default_factory=list)
    fixes: list[Change] = Field(default_factory=list)
    other: list[Change] = Field(default_factory=list)
    added: list[Change] = Field(default_factory=list)
    removed: list[Change] = Field(default_factory=list)


class ProbeSummary(Document):
    """One probe of a cell as the page shows it: outcome, one line of detail, metrics (outputs stay in the result)."""

    name: str
    passed: bool
    skipped: bool = False  # could not judge: neither passes nor fails the cell
    detail: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)  # failed probes only; the full evidence is in the result


class StatusInfo(Document):
    """A legend entry, so the page's legend follows the statuses the farm knows."""

    status: str
    symbol: str
    meaning: str


class KindInfo(Document):
    """A legend entry of a failure kind (farm.model.verdicts)."""

    kind: str
    symbol: str
    meaning: str


class MatrixCell(Document):
    cell_id: str
    row: str
    column: str
    model: str
    quantization: str
    lora: str
    engine: str
    # Its run's platform (the one most of the run's results measured): a column level when runs on several
    # platforms are merged. What this cell itself measured is in its env facts (``envs[env_id]``).
    platform: str | None = None
    status: CellStatus
    symbol: str
    attempt: int = 1
    vllm: str | None = None
    vllm_commit: str | None = None
    vllm_dist: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    frame: str | None = None
    signature: str | None = None
    # What kind of failure the verdict is (refused, broken, wrong) and its root cause (farm.model.verdicts).
    kind: str | None = None
    root_cause: str | None = None
    failed_probes: list[str] = Field(default_factory=list)
    probes: dict[str, bool] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    peak_rss_mb: float | None = None
    result_key: str | None = None
    probe_results: list[ProbeSummary] = Field(default_factory=list)
    error_probe: str | None = None  # the probe that was running when the cell failed; None: engine build
    error_wrapper: str | None = None  # what the caller saw, when the root cause came from a subprocess's log
    env_id: str | None = None  # key into Matrix.envs: env facts are stored once per distinct environment
    log_key: str | None = None
    log_excerpt: str | None = None  # last lines of the log, for cells that died without a traceback


class SignatureGroup(Document):
    """One variant of a root cause: the cells whose failures share a signature."""

    signature: str
    error_type: str
    frame: str | None
    message: str
    cells: list[str]
    traceback_tail: str = ""
    root_cause: str | None = None
    kind: str | None = None
    vllm: list[str] = Field(default_factory=list)  # the vLLM versions it was measured on
    platforms: list[str] = Field(default_factory=list)  # and the platforms (farm.model.platforms)


class RootCauseGroup(Document):
    """One bug: its variants (signatures) differ in message details, file or line, not in what went wrong."""

    root_cause: str
    kind: str | None = None
    error_type: str
    function: str | None = None  # the innermost vLLM function
    message: str  # the message template: quoted class names masked
    variants: list[str] = Field(default_factory=list)  # signatures, most cells first
    frames: list[str] = Field(default_factory=list)  # where it was raised, per variant
    cells: list[str] = Field(default_factory=list)
    vllm: list[str] = Field(default_factory=list)
    platforms: list[str] = Field(default_factory=list)


class LedgerFinding(Document):
    """One known bug of jobs/known_bugs.yaml against measured runs (farm.ops.known_bugs)."""

    id: str
    title: str = ""
    verdict: str  # rediscovered | contradicted | not reproducible
    why: str
    evidence: list[str] = Field(default_factory=list)
    tracker: list[str] = Field(default_factory=list)


class LedgerCheck(Document):
    """A published `farm known-bugs check`: which runs it read and what it found, for the page."""

    checked_at: str
    ledger: str
    runs: list[str]
    findings: list[LedgerFinding] = Field(default_factory=list)


class UnreadableDocument(Document):
    """A result object in the store that could not be read (truncated, corrupt, misplaced)."""

    key: str
    reason: str


class Matrix(Document):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    job_name: str
    generated_at: str
    rows: list[str]
    columns: list[str]
    cells: list[MatrixCell]
    signatures: list[SignatureGroup] = Field(default_factory=list)
    root_causes: list[RootCauseGroup] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    kind_counts: dict[str, int] = Field(default_factory=dict)
    expected_cells: int = 0
    started_at: str | None = None  # the run's start, so an older run aggregated later never becomes "latest"
    unreadable: list[UnreadableDocument] = Field(default_factory=list)
    # The version axis (farm.report.versions): a column group per engine, in the job's order, and per
    # combination the first engine where its outcome changed.
    engines: list[EngineGroup] = Field(default_factory=list)
    version_changes: list[VersionChange] = Field(default_factory=list)
    # The platforms of the runs (farm.model.platforms); more than one only in a matrix merged from several runs
    # (`farm matrix RUN RUN …`), whose columns then have the platform as their top level.
    platforms: list[str] = Field(default_factory=list)
    runs: list[str] = Field(default_factory=list)  # the runs merged into this matrix (one: a run's own matrix)
    platform_differences: list[PlatformDifference] = Field(default_factory=list)
    matrix_key: str = ""
    finished_at: str | None = None
    legend: list[StatusInfo] = Field(default_factory=list)
    kinds: list[KindInfo] = Field(default_factory=list)
    envs: dict[str, EnvFacts] = Field(default_factory=dict)
    history: History | None = None  # this combination's last runs of the same job (farm.report.history)
    changes: Changes | None = None  # regressions and fixes since the previous run of the same job
    known_bugs: LedgerCheck | None = None  # the last published known-bug check of this store

    def at(self, row: str, column: str) -> MatrixCell | None:
        return next((c for c in self.cells if c.row == row and c.column == column), None)
