"""`farm bisect`: the first version, or commit, where one combination's outcome changes.

A combination (model × quantization × LoRA) is run on one candidate engine at a time,
through the real driver (``farm.runner.driver.run``) with the job's probes, and compared with
its outcome on ``--good``: status and root cause (signature, or the probes that failed),
as in the matrix's version axis. The candidates are the job's engines in the job's
order (oldest first), or an ordered file of vLLM commits, each run as a ``uv`` engine
with that commit. Search is binary: about log2(n) + 2 runs for n candidates.

- **Reuse.** Every result already in the store for a candidate's cell id (a nightly, a
  version run, an earlier bisection) is used instead of running it; the latest one
  counts. Reused results also check the answer: a ``--good`` outcome seen after the
  change, or another outcome before it, marks the verdict not monotonic.
- **No verdict, no step.** A candidate whose env cannot be built or whose cell hits an
  infra error is skipped (like ``git bisect skip``) and a neighbour is tried; if only
  skipped candidates lie between the last good and the first changed one, the verdict
  is that range.
- **A third outcome** (neither ``--good``'s nor ``--bad``'s) counts as changed, and the
  transcript says so: the combination changed more than once between the ends.

The verdict goes to ``bisect/<bisect_id>.json``; each step's run is an ordinary run in
the store (``runs/<bisect_id>-<n>/``), without a matrix of its own, so a one-cell step
never becomes the store's latest page.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from farm.errors import BisectError, did_you_mean
from farm.model.cells import Cell, expand
from farm.model.results import SCHEMA_VERSION, CellResult, Document, utcnow
from farm.model.spec import JobSpec, parse_job
from farm.ops.bisect_search import Found, Observation, Outcome, Step, search
from farm.store import Store, safe_part
from farm.store.layout import RUNS_PREFIX, bisect_key, parse_result_key

_SHA = re.compile(r"[0-9a-f]{40}")


class Verdict(Document):
    schema_version: int = SCHEMA_VERSION
    bisect_id: str
    job_name: str
    combination: str  # model/quantization/lora
    model: str
    quantization: str
    lora: str
    mode: str  # "versions" (the job's engines) or "commits" (a commit list, uv engines)
    candidates: list[str]  # from --good to --bad, in order
    cell_ids: dict[str, str] = Field(default_factory=dict)  # candidate → its cell id
    good: str
    bad: str
    good_outcome: str
    bad_outcome: str = ""
    result: str  # "found", "range" (only untestable candidates between), "no_change"
    first_changed: str | None = None
    last_good: str | None = None
    first_changed_outcome: str | None = None
    skipped: list[str] = Field(default_factory=list)
    monotonic: bool = True
    notes: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    runs: int = 0  # steps this bisection ran (the others came from the store)
    started_at: str
    finished_at: str | None = None
    transcript: list[str] = Field(default_factory=list)


# ---- candidates: the job's engines, or a commit list ----


def read_commits(path: Path) -> list[tuple[str, str]]:
    """(sha, name) per line of an ordered commit list (oldest first): ``SHA [NAME]``, ``#`` comments."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BisectError(f"--commits {path}: {exc.strerror}; give a file with one full vLLM commit sha a line, "
                          "oldest first (e.g. `git rev-list --reverse GOOD..BAD > commits.txt`)") from None
    commits = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        sha, *rest = text.split()
        if not _SHA.fullmatch(sha):
            raise BisectError(f"--commits {path}:{number}: {sha[:50]!r} is not a full 40-character commit sha; "
                              "write one sha (and an optional name) a line")
        name = rest[0] if rest else sha[:12]
        commits.append((sha, name))
    if len(commits) < 2:
        raise BisectError(f"--commits {path}: needs at least two commits, oldest first; it has {len(commits)}")
    return commits


def commit_engines(job: JobSpec, commits: list[tuple[str, str]], like: str | None) -> list[Any]:
    """One uv engine per commit, with the install fields (indexes, variant, uninstall …) of engine ``like``."""
    from farm.model.engines import UvEngine

    template: dict[str, Any] = {}
    if like is not None:
        engine = _engine(job, like, "--like")
        template = engine.model_dump(mode="json", exclude_defaults=True,
                                     exclude={"name", "kind", "commit", "requirements", "max_age_h"})
    engines = []
    for sha, name in commits:
        try:
            engines.append(UvEngine.model_validate({**template, "name": name, "kind": "uv", "commit": sha}))
        except ValueError as exc:
            raise BisectError(f"--commits: commit {sha[:12]} as a uv engine: {str(exc).splitlines()[-1].strip()}") from None
    return engines


def _engine(job: JobSpec, name: str, flag: str) -> Any:
    for engine in job.engines:
        if engine.name == name:
            return engine
    raise BisectError(f"{flag} {name}: job {job.name} has no such engine.{did_you_mean(name, [e.name for e in job.engines])}")


def _index(names: list[str], value: str, flag: str, what: str) -> int:
    if value in names:
        return names.index(value)
    matches = [i for i, n in enumerate(names) if len(value) >= 7 and n.startswith(value)]
    if len(matches) == 1:
        return matches[0]
    raise BisectError(f"{flag} {value}: not one of the {what}.{did_you_mean(value, names)}")


def find_cell(job: JobSpec, cell: str) -> Cell:
    """A cell of the job by id (from `farm validate`) or by its combination ``model/quantization/lora``."""
    cells = expand(job)
    for candidate in cells:
        if candidate.id == cell or candidate.combination == cell:
            return candidate
    labels = sorted({c.combination for c in cells})
    raise BisectError(f"--cell {cell}: job {job.name} has no cell with this id or combination; give a cell id from "
                      f"`farm validate` or one of: {', '.join(labels[:12])}{' …' if len(labels) > 12 else ''}")


def single_cell_job(job: JobSpec, cell: Cell, engine: Any) -> tuple[JobSpec, Cell]:
    """The job narrowed to one combination on one engine: the same cell id as in the job itself."""
    data = job.model_dump(mode="json")
    data["engines"] = [engine.model_dump(mode="json")]
    data["include"] = [{"model": cell.model, "quantization": cell.quantization, "lora": cell.lora}]
    data["exclude"] = []
    narrowed = parse_job(data, origin=f"job {job.name} narrowed to {cell.label}")
    cells = expand(narrowed)
    assert len(cells) == 1, [c.label for c in cells]
    return narrowed, cells[0]


def _candidates(job: JobSpec, good: str, bad: str, commits: Path | None, like: str | None) -> tuple[list[Any], list[str]]:
    """The engines from --good to --bad, oldest first, and their names: the first change lies in this range only.

    The job's engines, or one uv engine per commit of the list; a commit is given by its name in the list, or by
    its sha or a prefix of 7 characters or more, as git takes it.
    """
    if commits is not None:
        listed = read_commits(commits)
        engines = commit_engines(job, listed, like)
        names = [e.name for e in engines]
        shas = [sha for sha, _ in listed]
        what = f"commits in {commits}"
        good_i = _index(shas, good, "--good", what) if good not in names else names.index(good)
        bad_i = _index(shas, bad, "--bad", what) if bad not in names else names.index(bad)
    else:
        engines = list(job.engines)
        names = [e.name for e in engines]
        what = f"engines of job {job.name}"
        good_i, bad_i = _index(names, good, "--good", what), _index(names, bad, "--bad", what)
    if good_i == bad_i:
        raise BisectError(f"--good and --bad are both {names[good_i]}; give two different {'commits' if commits else 'engines'}")
    if good_i > bad_i:
        raise BisectError(f"--good {names[good_i]} comes after --bad {names[bad_i]} in the "
                          f"{'commit list' if commits else 'job engine order'} (oldest first): give the older one as --good")
    return engines[good_i:bad_i + 1], names[good_i:bad_i + 1]


# ---- reuse: what the store already knows about each candidate's cell ----


def stored_results(store: Store, cell_ids: set[str]) -> dict[str, list[CellResult]]:
    """Every readable result of these cell ids in any run of the store, oldest first.

    One listing of ``runs/``: slower on a store of many runs than a lookup, but it costs
    seconds where each step costs an engine build.
    """
    keys = [k for k in store.list(RUNS_PREFIX) if (parsed := parse_result_key(k)) and parsed[1] in cell_ids]
    found: dict[str, list[CellResult]] = {}
    for _key, data in store.get_many(keys):
        if isinstance(data, Exception):
            continue
        try:
            result = CellResult.model_validate_json(data)
        except ValueError:
            continue
        found.setdefault(result.cell_id, []).append(result)
    for results in found.values():
        results.sort(key=lambda r: (r.finished_at or utcnow().replace(year=1), r.attempt))
    return found


def make_bisect_id(job_name: str) -> str:
    return f"bisect-{safe_part(job_name)}-{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def bisect(
    job: JobSpec,
    cell: str,
    good: str,
    bad: str,
    *,
    store: Store,
    commits: Path | None = None,
    like: str | None = None,
    address: str | None = None,
    say: Callable[[str], None] = print,
) -> Verdict:
    """Bisect one combination of ``job`` between two engines (or two commits of a list); write the verdict.

    Each step that has no result in the store yet runs through ``farm.runner.driver.run``.

    Raises:
        BisectError: bad --cell/--good/--bad/--commits, or an end without a verdict (one line, before or
            right after the ends run).
    """
    from farm.runner.driver import run

    base = find_cell(job, cell)
    engines, names = _candidates(job, good, bad, commits, like)
    cells = [single_cell_job(job, base, engine) for engine in engines]
    cell_ids = [c.id for _, c in cells]
    bisect_id = make_bisect_id(job.name)
    combination = base.combination
    transcript: list[str] = []

    def tell(line: str) -> None:
        transcript.append(line)
        say(line)

    store.check()  # before anything runs: a store that cannot be written stops the bisection here
    stored = stored_results(store, set(cell_ids))
    known = {i: [Outcome.of(r) for r in stored.get(cid, [])] for i, cid in enumerate(cell_ids) if cid in stored}
    tell(f"bisect {bisect_id}: {combination} of job {job.name} over {len(names)} "
         f"{'commits' if commits else 'engines'}, good {names[0]}, bad {names[-1]}; "
         f"{len(known)} of them already have a result in {store.url}")
    observe = _Steps(run, store, address, bisect_id, cells, stored)
    started_at = utcnow().isoformat(timespec="seconds")
    found = search(names, 0, len(names) - 1, observe, known=known, say=tell)
    verdict = _verdict(job, base, bisect_id, "commits" if commits else "versions", names, cell_ids, found,
                       observe.runs, started_at)
    for line in _conclusion(verdict):
        tell(line)
    verdict.transcript = transcript
    verdict.finished_at = utcnow().isoformat(timespec="seconds")
    store.put(bisect_key(bisect_id), verdict.model_dump_json(indent=1).encode())
    tell(f"verdict: {store.location(bisect_key(bisect_id))}")
    verdict.transcript = transcript
    return verdict


class _Steps:
    """A step's observation: the store's latest result of its cell, else a run of that one cell.

    It counts the runs so that each has an id of its own (``<bisect_id>-<n>``) and the verdict says how many ran.
    """

    def __init__(self, run: Callable[..., Any], store: Store, address: str | None, bisect_id: str,
                 cells: list[tuple[JobSpec, Cell]], stored: dict[str, list[CellResult]]) -> None:
        self.run, self.store, self.address, self.bisect_id = run, store, address, bisect_id
        self.cells, self.stored = cells, stored
        self.runs = 0

    def __call__(self, i: int) -> Observation:
        narrowed, cell = self.cells[i]
        if self.stored.get(cell.id):
            latest = self.stored[cell.id][-1]
            return Observation(Outcome.of(latest), "store", latest.run_id)
        self.runs += 1
        started = time.monotonic()
        outcome = self.run(narrowed, store=self.store, address=self.address, run_id=f"{self.bisect_id}-{self.runs}",
                           write_matrix=False)
        result = next(r for r in outcome.results if r.cell_id == cell.id)
        self.stored.setdefault(cell.id, []).append(result)
        return Observation(Outcome.of(result), "ran", outcome.run_id, time.monotonic() - started)


def _verdict(job: JobSpec, base: Cell, bisect_id: str, mode: str, names: list[str], cell_ids: list[str],
             found: Found, runs: int, started_at: str) -> Verdict:
    """The search's answer in the candidates' names: the document ``bisect/<bisect_id>.json`` holds."""
    result, lo, hi, steps, skipped, monotonic, notes = found
    return Verdict(
        bisect_id=bisect_id, job_name=job.name, combination=base.combination,
        model=base.model, quantization=base.quantization, lora=base.lora, mode=mode,
        candidates=names, cell_ids=dict(zip(names, cell_ids)), good=names[0], bad=names[-1],
        good_outcome=steps[0].outcome, bad_outcome=steps[1].outcome if len(steps) > 1 else "", result=result,
        first_changed=names[hi] if hi is not None else None, last_good=names[lo] if lo is not None else None,
        first_changed_outcome=next((s.outcome for s in steps if s.index == hi), None) if hi is not None else None,
        skipped=skipped, monotonic=monotonic, notes=notes, steps=steps, runs=runs, started_at=started_at,
    )


def _conclusion(verdict: Verdict) -> list[str]:
    """The transcript's last lines before the verdict's location: the answer, its caveats, what it cost."""
    names, good_outcome = verdict.candidates, verdict.good_outcome
    if verdict.result == "no_change":
        lines = [f"no change: {names[0]} and {names[-1]} both give {good_outcome}"]
    elif verdict.result == "found":
        lines = [f"first change: {verdict.first_changed} ({verdict.first_changed_outcome}); last good: "
                 f"{verdict.last_good} ({good_outcome})"]
    else:
        lines = [f"first change between {verdict.last_good} ({good_outcome}) and {verdict.first_changed} "
                 f"({verdict.first_changed_outcome}); untestable between them: {', '.join(verdict.skipped)}"]
    lines += [f"note: {note}" for note in verdict.notes]
    reused = len(verdict.steps) - verdict.runs
    lines.append(f"{len(verdict.steps)} step(s) for {len(names)} candidates: {verdict.runs} ran, {reused} from the store")
    return lines
