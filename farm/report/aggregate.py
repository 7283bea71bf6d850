"""Results → matrix: rows model × quantization, columns LoRA × engine, failures grouped by signature.

``matrix.json`` is the only input of the page and of ``farm matrix``: whatever they
show must be in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from farm.errors import KeyNotFound
from farm.model.cells import Cell
from farm.model.matrix import KindInfo, Matrix, MatrixCell, ProbeSummary, RootCauseGroup, SignatureGroup, StatusInfo, UnreadableDocument
from farm.model.platforms import UNKNOWN, most_common, platform_of
from farm.model.results import CellResult, CellStatus, Document, EnvFacts, ErrorInfo, RunManifest, no_cyclic_gc, status_counts, utcnow
from farm.model.verdicts import FailureKind, failure_kind, innermost_function, message_template, root_cause
from farm.report import versions
from farm.report.history import attach_history
from farm.report.ledger import read_known_bugs
from farm.store import RunScan, Store, Unreadable, log_key, matrix_key, read_manifest, result_key, scan_run
from farm.store.layout import PAGE_KEY

log = logging.getLogger("farm.report.aggregate")

# Statuses whose cell died without a traceback: the log's last lines are the only "why".
_LOG_EXCERPT_STATUSES = (CellStatus.CRASH, CellStatus.TIMEOUT, CellStatus.INFRA_ERROR, CellStatus.ENV_ERROR)
LOG_EXCERPT_LINES, LOG_EXCERPT_CHARS = 25, 2000
EVIDENCE_CHARS = 4000  # a failed probe's evidence (e.g. both sides at the first divergence), if it is this small


RunResults = tuple[RunManifest, list[CellResult]]


def build_matrix(manifest: RunManifest, results: list[CellResult], unreadable: list[Unreadable] | None = None) -> Matrix:
    """A run's matrix."""
    return _build([(manifest, results)], manifest, unreadable)


def merge_runs(runs: Sequence[RunResults], unreadable: list[Unreadable] | None = None) -> Matrix:
    """One matrix of several runs, e.g. a CPU run and an H200 run of the same combinations.

    When the runs were made on different platforms (each run's platform is the one most of its results
    measured: farm.model.platforms), the platform becomes the columns' top level (``LoRA · engine ·
    platform``), versions are compared on one platform at a time, and the combinations whose verdict differs
    by platform are listed. A cell that two runs on one platform measured shows the later run's result, in
    the order given.
    """
    matrix = _build(runs, _merged_manifest([manifest for manifest, _ in runs]), unreadable)
    matrix.matrix_key = ""  # kept nowhere in the store: `farm matrix --html` writes its JSON beside the page
    return matrix


def _build(runs: Sequence[RunResults], manifest: RunManifest, unreadable: list[Unreadable] | None) -> Matrix:
    measured = [most_common(platform_of(r.env) for r in results) for _, results in runs]
    split = len({p or UNKNOWN for p in measured}) > 1
    run_platforms = [p or UNKNOWN for p in measured] if split else measured
    # (row, column) → the run's id, the cell, its id, its result and its run's platform; a later run's wins.
    chosen: dict[tuple[str, str], tuple[str, Cell, str, CellResult | None, str | None]] = {}
    for (run, results), platform in zip(runs, run_platforms, strict=True):
        by_id = {r.cell_id: r for r in results}
        for cell, cell_id in zip(run.cells, run.cell_ids, strict=True):  # the job's order of axes
            column = f"{cell.column} · {platform}" if split else cell.column
            chosen[(cell.row, column)] = (run.run_id, cell, cell_id, by_id.get(cell_id), platform)
    rows: dict[str, None] = {}
    columns: dict[str, None] = {}
    cells: list[MatrixCell] = []
    groups: dict[str, SignatureGroup] = {}
    firsts: dict[str, ErrorInfo] = {}  # each root cause's first error, for its function and template
    envs: dict[str, EnvFacts] = {}
    env_ids: dict[str, str] = {}
    kinds: dict[tuple[str | None, str], str] = {}
    for (row, column), (run_id, cell, cell_id, result, platform) in chosen.items():
        rows.setdefault(row)
        columns.setdefault(column)
        kinds.setdefault((platform, cell.engine.name), cell.engine.kind)
        error = result.error if result else None
        cells.append(_matrix_cell(run_id, cell, cell_id, row, column, result, error, envs, env_ids, platform))
        if error and error.signature:
            _group(groups, firsts, error, cells[-1])
    platforms = [p for p in dict.fromkeys(run_platforms) if p]
    return _assemble(manifest, _rows_by_model(rows, cells), list(columns), cells, groups, _root_causes(groups, firsts), envs, unreadable,
                     platforms=platforms, runs=[run.run_id for run, _ in runs], kinds=kinds)


def _rows_by_model(rows: dict[str, None], cells: list[MatrixCell]) -> list[str]:
    """Rows in first-seen order, a model's rows together (a later run may add a quantization of an earlier model)."""
    model_of = {c.row: c.model for c in cells}
    first: dict[str, int] = {}
    for row in rows:
        first.setdefault(model_of[row], len(first))
    order = {row: i for i, row in enumerate(rows)}
    return sorted(rows, key=lambda row: (first[model_of[row]], order[row]))


def _group(groups: dict[str, SignatureGroup], firsts: dict[str, ErrorInfo], error: ErrorInfo, cell: MatrixCell) -> None:
    """File a failed cell under its signature's group."""
    assert error.signature
    group = groups.setdefault(
        error.signature,
        SignatureGroup(
            signature=error.signature,
            error_type=error.type,
            frame=error.frame,
            message=error.normalized_message or error.message,
            cells=[],
            traceback_tail=error.traceback_tail,
            root_cause=cell.root_cause,
            kind=cell.kind,
        ),
    )
    group.cells.append(cell.cell_id)
    if cell.vllm and cell.vllm not in group.vllm:
        group.vllm.append(cell.vllm)
    if cell.platform and cell.platform not in group.platforms:
        group.platforms.append(cell.platform)
    if group.root_cause and group.root_cause not in firsts:
        firsts[group.root_cause] = error


def _merged_manifest(manifests: Sequence[RunManifest]) -> RunManifest:
    """What the matrix of several runs reads of "the run": their ids and jobs joined, their engines in the order
    given, the earliest start, the latest finish (none while one is unfinished)."""
    engines: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        for engine in manifest.job.get("engines", []):
            if isinstance(engine, dict):
                engines.setdefault(str(engine.get("name", "current")), engine)
    finished = [m.finished_at for m in manifests]
    return manifests[0].model_copy(update={
        "run_id": " + ".join(m.run_id for m in manifests),
        "job_name": " + ".join(dict.fromkeys(m.job_name for m in manifests)),
        "job": {"name": "merged", "engines": list(engines.values())},
        "cells": [cell for m in manifests for cell in m.cells],
        "cell_ids": [cell_id for m in manifests for cell_id in m.cell_ids],
        "started_at": min(m.started_at for m in manifests),
        "finished_at": None if None in finished else max(f for f in finished if f),
    })


def _root_causes(groups: dict[str, SignatureGroup], firsts: dict[str, ErrorInfo]) -> list[RootCauseGroup]:
    """Signatures grouped by root cause (only verdicts: the farm's own errors are no bug of vLLM's)."""
    causes: dict[str, RootCauseGroup] = {}
    for group in sorted(groups.values(), key=lambda g: (-len(g.cells), g.signature)):
        if not group.root_cause or group.kind is None:
            continue
        first = firsts[group.root_cause]
        cause = causes.setdefault(group.root_cause, RootCauseGroup(
            root_cause=group.root_cause, kind=group.kind, error_type=group.error_type,
            function=innermost_function(first), message=message_template(first)))
        cause.variants.append(group.signature)
        if group.frame and group.frame not in cause.frames:
            cause.frames.append(group.frame)
        cause.cells += group.cells
        cause.vllm += [v for v in group.vllm if v not in cause.vllm]
        cause.platforms += [p for p in group.platforms if p not in cause.platforms]
    for group in groups.values():
        group.vllm.sort(key=versions.release_order)
    for cause in causes.values():
        cause.vllm.sort(key=versions.release_order)
    return sorted(causes.values(), key=lambda c: (-len(c.cells), c.root_cause))


def _matrix_cell(run_id: str, cell: Cell, cell_id: str, row: str, column: str, result: CellResult | None,
                 error: ErrorInfo | None, envs: dict[str, EnvFacts], env_ids: dict[str, str], platform: str | None) -> MatrixCell:
    """One grid cell, pending if it has no result; called once per cell, so it does the least it can.

    _trusted: every value below comes from documents already validated (the manifest, the results); validating
    100 000 MatrixCells again, or model_construct's loop over the fields, cost seconds (bench/RESULTS.md).
    """
    status = result.status if result else CellStatus.PENDING
    kind = failure_kind(status, error) if result else None
    return _trusted(MatrixCell,
        cell_id=cell_id,
        row=row,
        column=column,
        model=cell.model,
        quantization=cell.quantization,
        lora=cell.lora,
        engine=cell.engine.name,
        platform=platform,
        status=status,
        # A failure shows its kind (refused ⊖, broken ✗, wrong ≠); other statuses their own symbol.
        symbol=kind.symbol if kind and status == CellStatus.FAIL else status.symbol,
        attempt=result.attempt if result else 1,
        vllm=result.env.vllm if result else None,
        vllm_commit=result.env.vllm_commit if result else None,
        vllm_dist=result.env.vllm_dist if result else None,
        error_type=error.type if error else None,
        error_message=error.message[:500] if error else None,
        frame=error.frame if error else None,
        signature=error.signature if error else None,
        kind=kind.value if kind else None,
        root_cause=root_cause(error) if kind else None,
        failed_probes=[p.name for p in result.probes if p.failed] if result else [],
        probes={p.name: p.passed for p in result.probes} if result else {},
        timings=result.timings if result else {},
        peak_rss_mb=result.peak_rss_mb if result else None,
        result_key=result_key(run_id, cell_id, result.attempt) if result else None,
        **(_details(result, envs, env_ids) if result else _no_details()),
    )


def _assemble(manifest: RunManifest, rows: list[str], columns: list[str], cells: list[MatrixCell],
              groups: dict[str, SignatureGroup], causes: list[RootCauseGroup], envs: dict[str, EnvFacts],
              unreadable: list[Unreadable] | None, *, platforms: list[str], runs: list[str],
              kinds: dict[tuple[str | None, str], str]) -> Matrix:
    """The matrix around its cells: counts, the columns grouped by platform and engine version, the version
    changes, the differences between platforms."""
    counts = status_counts(cells)
    order = versions.engine_order(manifest, cells)
    columns = versions.grouped_columns(columns, cells, order, platforms)
    return Matrix(
        engines=versions.engine_groups(kinds, cells, columns),
        version_changes=versions.first_changes(cells, order),
        platforms=platforms,
        runs=runs,
        platform_differences=versions.platform_differences(cells, platforms),
        run_id=manifest.run_id,
        job_name=manifest.job_name,
        generated_at=utcnow().isoformat(timespec="seconds"),
        rows=rows,
        columns=columns,
        cells=cells,
        signatures=sorted(groups.values(), key=lambda g: (-len(g.cells), g.signature)),
        root_causes=causes,
        counts=counts,
        kind_counts={k.value: n for k in FailureKind if (n := sum(1 for c in cells if c.kind == k.value))},
        expected_cells=len(manifest.cells),
        started_at=manifest.started_at.isoformat(timespec="seconds"),
        unreadable=[UnreadableDocument(key=u.key, reason=u.reason) for u in unreadable or []],
        matrix_key=matrix_key(manifest.run_id),
        finished_at=manifest.finished_at.isoformat(timespec="seconds") if manifest.finished_at else None,
        legend=[StatusInfo(status=s.value, symbol=s.symbol, meaning=s.meaning) for s in CellStatus],
        kinds=[KindInfo(kind=k.value, symbol=k.symbol, meaning=k.meaning) for k in FailureKind],
        envs=envs,
    )


_M = TypeVar("_M", bound=Document)


def _trusted(model_class: type[_M], /, **values: Any) -> _M:
    """An instance of ``model_class`` from values already validated, every field given (tests re-validate the results).

    What ``model_construct`` does without its per-field loop: ~1 µs instead of ~18 µs, and a 100 000-cell
    matrix makes 100 000 cells and several probe summaries each.
    """
    instance = model_class.__new__(model_class)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


def _no_details() -> dict[str, Any]:
    """A pending cell's detail fields (a fresh list each: cells never share a mutable value)."""
    return {"probe_results": [], "error_probe": None, "error_wrapper": None, "env_id": None, "log_key": None,
            "log_excerpt": None}


def _details(result: CellResult, envs: dict[str, EnvFacts], env_ids: dict[str, str]) -> dict[str, Any]:
    """What the page's cell detail needs beyond the grid: probes with metrics, env facts, log."""
    env_id = None
    facts = result.env.__dict__  # the fields' values: plain data (str, numbers, lists, dicts)
    if any(facts.values()):  # a cell that died before measuring has no facts
        env_key = repr(facts)  # a few distinct environments in a run; repr is ~10x cheaper than model_dump_json
        if env_key not in env_ids:
            env_ids[env_key] = f"e{len(env_ids)}"
            envs[env_ids[env_key]] = result.env
        env_id = env_ids[env_key]
    excerpt = None
    # A died or hung process's stack is read out of its log, so the log's last lines stay the evidence
    # (the fatal signal line, what ran before); for the other statuses a traceback says it all.
    has_traceback = bool(result.error and result.error.traceback_tail)
    if result.status in _LOG_EXCERPT_STATUSES and result.log_tail and (
            not has_traceback or result.status in (CellStatus.CRASH, CellStatus.TIMEOUT)):
        excerpt = "\n".join(result.log_tail.rstrip().splitlines()[-LOG_EXCERPT_LINES:])[-LOG_EXCERPT_CHARS:]
    return {
        "probe_results": [_probe_summary(p.__dict__) for p in result.probes],
        "error_probe": result.error.probe if result.error else None,
        "error_wrapper": result.error.wrapper if result.error else None,
        "env_id": env_id,
        "log_key": log_key(result.run_id, result.cell_id, result.attempt) if result.log_tail else None,
        "log_excerpt": excerpt,
    }


def _probe_summary(probe: dict[str, Any]) -> ProbeSummary:
    """A ProbeResult's fields (its ``__dict__``) as the page shows them: a quarter of a million at 100 000 cells."""
    evidence = probe["evidence"]
    if not evidence or probe["passed"] or probe["skipped"] or len(json.dumps(evidence)) > EVIDENCE_CHARS:
        evidence = {}  # only a failed probe's, and only if small: the whole evidence stays in the result
    return _trusted(ProbeSummary, name=probe["name"], passed=probe["passed"], skipped=probe["skipped"],
                    detail=probe["detail"], metrics=probe["metrics"], evidence=evidence)


def aggregate(store: Store, run_id: str, scan: RunScan | None = None, *, exports: bool = True,
              manifest: RunManifest | None = None) -> tuple[str, str]:
    """Read a run's results from the store; write its matrix, exports, and (for the newest run)
    ``matrix/latest.json`` and the page. Returns the keys of the matrix and the page.

    ``scan`` and ``manifest``: every attempt of the run's cells and the run's manifest, when the caller holds
    them (the driver at the end of its run keeps each result it recorded and the manifest it wrote last): the
    store is then not read for them. ``exports``: the JSONL and Parquet exports too (every attempt of every
    cell), which the page and ``farm matrix`` do not need.

    The matrix carries the job's history (earlier runs read from the store) and the
    changes since the previous run; see ``farm.report.history``.
    """
    with no_cyclic_gc():
        return _aggregate(store, run_id, scan, exports, manifest)


def _aggregate(store: Store, run_id: str, scan: RunScan | None, exports: bool,
               manifest: RunManifest | None) -> tuple[str, str]:
    from farm.report.export import export
    from farm.report.render import render_page

    manifest = manifest or read_manifest(store, run_id)
    if scan is None:  # one listing and one read of each document serve the matrix and the exports
        scan = scan_run(store, run_id, all_attempts=exports)
    matrix = build_matrix(manifest, list(scan.latest.values()), scan.unreadable)
    attach_history(store, matrix)
    matrix.known_bugs = read_known_bugs(store)
    data = matrix.model_dump_json().encode()  # compact: for programs (the page, farm matrix); ~100 MB at 100 000 cells
    key = matrix_key(run_id)
    store.put(key, data, overwrite=True)
    if exports:
        export(store, run_id, scan)
    if _is_newest(store, matrix):
        store.put(matrix_key(), data, overwrite=True)
        store.put(PAGE_KEY, render_page(matrix, data).encode(), overwrite=True)
    else:
        log.warning("%s is not the newest run in %s: matrix/latest.json and the page stay as they are",
                    run_id, store.url)
    return key, PAGE_KEY


class _MatrixHead(Document):
    """What ``_is_newest`` reads of the current latest.json: parsing a whole 100 000-cell matrix took seconds."""

    run_id: str
    started_at: str | None = None


def _is_newest(store: Store, matrix: Matrix) -> bool:
    try:
        current = _MatrixHead.model_validate_json(store.get(matrix_key()))
    except KeyNotFound:
        return True
    except ValueError:  # an unreadable latest.json is replaced, not kept
        return True
    if current.run_id == matrix.run_id or not current.started_at or not matrix.started_at:
        return True
    return matrix.started_at >= current.started_at


def load_matrix(store: Store, run_id: str | None = None) -> Matrix:
    """A run's matrix document; for a run that wrote none (a bisect step), built from its results, nothing written."""
    try:
        return Matrix.model_validate_json(store.get(matrix_key(run_id)))
    except KeyNotFound:
        if run_id is None:
            raise
        manifest = read_manifest(store, run_id)  # its own error names a run that is not in the store
        scan = scan_run(store, run_id)
        return build_matrix(manifest, list(scan.latest.values()), scan.unreadable)


def load_merged(store: Store, run_ids: Sequence[str]) -> Matrix:
    """One matrix of several runs in ``store`` (see merge_runs), built from their results; written nowhere."""
    runs: list[RunResults] = []
    unreadable: list[Unreadable] = []
    with no_cyclic_gc():
        for run_id in dict.fromkeys(run_ids):
            manifest = read_manifest(store, run_id)  # its own error names a run that is not in the store
            scan = scan_run(store, run_id)
            runs.append((manifest, list(scan.latest.values())))
            unreadable += scan.unreadable
        matrix = merge_runs(runs, unreadable)
    matrix.known_bugs = read_known_bugs(store)
    return matrix
