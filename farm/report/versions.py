"""The version axis of a matrix: a column group per engine, and per combination the first version where its outcome changed.

Engines are compared in the job's order (oldest first, by convention: a job lists the
versions it bisects over in order). A combination is one model × quantization × LoRA;
its outcome on an engine is its status and, for a failure, its root cause (signature,
or the probes that failed). Statuses that carry no verdict (not run, infra or env
error) are skipped, never compared: an env that did not build says nothing about the
version, and the change is measured against the last version that did run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from farm.model.matrix import EngineGroup, MatrixCell, VersionChange
from farm.model.results import RunManifest


def release_order(version: str) -> tuple[tuple[int, ...], str]:
    """Sorts vLLM versions as releases: 0.9.2 < 0.11.1 < 0.11.1+cpu < 0.24.1.dev3 (numbers, then the text)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0].split(".dev")[0])[:4]), version


def engine_order(manifest: RunManifest, cells: Sequence[MatrixCell]) -> list[str]:
    """The job's engine order (the manifest keeps the job), then any engine only the cells name."""
    names = [str(e.get("name", "current")) for e in manifest.job.get("engines", []) if isinstance(e, dict)]
    for cell in cells:
        if cell.engine not in names:
            names.append(cell.engine)
    return names


def grouped_columns(columns: Sequence[str], cells: Sequence[MatrixCell], order: Sequence[str]) -> list[str]:
    """Columns grouped per engine in ``order``; within a group, LoRA columns keep their first-seen order."""
    engine_of = {c.column: c.engine for c in cells}
    rank = {name: i for i, name in enumerate(order)}
    return sorted(columns, key=lambda col: (rank.get(engine_of.get(col, ""), len(rank)), columns.index(col)))


def engine_groups(manifest: RunManifest, cells: Sequence[MatrixCell], columns: Sequence[str]) -> list[EngineGroup]:
    kinds = {str(e.get("name")): str(e.get("kind", "current")) for e in manifest.job.get("engines", []) if isinstance(e, dict)}
    by_engine: dict[str, list[MatrixCell]] = {}
    for cell in cells:
        by_engine.setdefault(cell.engine, []).append(cell)
    groups = []
    for name in engine_order(manifest, cells):
        mine = by_engine.get(name, [])
        if not mine:
            continue
        present = {c.column for c in mine}
        groups.append(EngineGroup(
            engine=name,
            kind=kinds.get(name, "current"),
            columns=[col for col in columns if col in present],
            vllm=sorted({c.vllm for c in mine if c.vllm}),
            vllm_commit=sorted({c.vllm_commit for c in mine if c.vllm_commit}),
            vllm_dist=sorted({c.vllm_dist for c in mine if c.vllm_dist}),
        ))
    return groups


def _outcome(cell: MatrixCell) -> tuple[str, str]:
    # The root cause, not the signature: a bug whose line or file moved between versions did not change.
    return cell.status.value, cell.root_cause or cell.signature or ",".join(cell.failed_probes)


def first_changes(cells: Sequence[MatrixCell], order: Sequence[str]) -> list[VersionChange]:
    """Per combination whose outcome is not the same on every engine that ran it: where it first changed."""
    by_combination: dict[tuple[str, str], dict[str, MatrixCell]] = {}
    for cell in cells:
        by_combination.setdefault((cell.row, cell.lora), {})[cell.engine] = cell
    changes = []
    for (row, lora), per_engine in by_combination.items():
        ran = [per_engine[name] for name in order if name in per_engine and per_engine[name].status.is_verdict()]
        steps = [(a, b) for a, b in zip(ran, ran[1:]) if _outcome(a) != _outcome(b)]
        if not steps:
            continue
        before, after = steps[0]
        changes.append(VersionChange(
            row=row, lora=lora, model=after.model, quantization=after.quantization,
            engine=after.engine, previous_engine=before.engine,
            before=before.status.value, after=after.status.value,
            before_signature=before.signature, after_signature=after.signature,
            before_root_cause=before.root_cause, after_root_cause=after.root_cause,
            before_vllm=before.vllm, after_vllm=after.vllm, changes=len(steps),
        ))
    return changes


def group_header(groups: Sequence[EngineGroup], columns: Sequence[str], widths: list[int], gap: int = 2) -> str:
    """A line above the table's header naming each engine and the vLLM it measured, over its columns.

    Widens ``widths`` (column 0 is the row label) where a label is longer than its columns.
    """
    out = " " * (widths[0] + gap)
    for group in groups:
        index = [columns.index(col) + 1 for col in group.columns]
        label = group.engine + (f": {'/'.join(group.vllm_dist or ['vllm'])} {', '.join(group.vllm)}" if group.vllm else "")
        span = sum(widths[i] + gap for i in index) - gap
        if len(label) > span:
            widths[index[-1]] += len(label) - span
            span = len(label)
        out += label.ljust(span) + " " * gap
    return out.rstrip()


def format_changes(changes: Sequence[VersionChange]) -> list[str]:
    lines = []
    for change in changes:
        before_cause, after_cause = change.before_root_cause or change.before_signature, change.after_root_cause or change.after_signature
        before = change.before + (f" [{before_cause}]" if before_cause else "")
        after = change.after + (f" [{after_cause}]" if after_cause else "")
        more = f" ({change.changes} changes along the versions)" if change.changes > 1 else ""
        lines.append(f"  {change.row} · {change.lora}: {before} on {change.previous_engine} → {after} on {change.engine}{more}")
    return lines
