"""A matrix as a plain-text table for the terminal (`farm matrix`, the end of `farm run`): the grid under its
platform and version groups, the counts, the first changes along the versions, the differences between
platforms, then the root causes with their variants."""

from __future__ import annotations

from farm.model.cells import cell_label
from farm.model.matrix import Matrix, MatrixCell
from farm.report import versions

TRACEBACK_LINES_SHOWN = 4  # of each root cause's representative traceback


def format_table(matrix: Matrix) -> str:
    """The matrix as a plain-text table for the terminal, then the signature groups."""
    header = ["model · quantization", *matrix.columns]
    body: list[list[str]] = []
    for row in matrix.rows:
        line = [row]
        for column in matrix.columns:
            cell = matrix.at(row, column)
            if cell is None:
                line.append("")
            elif cell.signature:
                line.append(f"{cell.symbol} {_status_text(cell)} [{cell.root_cause or cell.signature}]")
            elif cell.failed_probes:
                line.append(f"{cell.symbol} {_status_text(cell)} ({','.join(cell.failed_probes)})")
            else:
                line.append(f"{cell.symbol} {_status_text(cell)}")
        body.append(line)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [versions.group_header(matrix.engines, matrix.columns, widths)] if len(matrix.engines) > 1 else []
    if len(matrix.platforms) > 1:  # computed after the engines' line: that one may widen columns
        lines.insert(0, versions.platform_header(matrix.engines, matrix.columns, widths))
    lines += [_table_line(header, widths), _table_line(["-" * w for w in widths], widths)]
    lines += [_table_line(r, widths) for r in body]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(matrix.counts.items()))
    kinds = ", ".join(f"{n} {kind}" for kind, n in matrix.kind_counts.items())
    lines.append(f"\n{len(matrix.cells)} cells: {counts}" + (f" (failures: {kinds})" if kinds else ""))
    if len(matrix.engines) > 1:
        lines.append("\nFirst version where the outcome changed:" if matrix.version_changes
                     else "\nNo combination changed its outcome between versions.")
        lines += versions.format_changes(matrix.version_changes, platforms=len(matrix.platforms) > 1)
    if len(matrix.platforms) > 1:
        lines.append("\nVerdicts that differ by platform:" if matrix.platform_differences
                     else f"\nNo combination's verdict differs between {' and '.join(matrix.platforms)}.")
        lines += versions.format_platform_differences(matrix.platform_differences)
    lines += _format_causes(matrix)
    lines += _format_unjudged(matrix)
    for document in matrix.unreadable:
        lines.append(f"unreadable: {document.key}: {document.reason}")
    return "\n".join(lines)


def format_by_version(matrix: Matrix, *, changed_only: bool = False) -> str:
    """Each combination's outcome along the versions (the job's engine order), in stretches of one outcome."""
    order = list(dict.fromkeys(group.engine for group in matrix.engines)) or sorted({c.engine for c in matrix.cells})
    found = versions.timelines(matrix.cells, order, changed_only=changed_only)
    if not found:
        return "No combination changed its verdict between versions." if changed_only else "No cells."
    changed = sum(1 for timeline in found if timeline.verdict_changes)
    header = (f"{len(found)} combination(s) over {len(order)} engine(s) ({order[0]} … {order[-1]}), "
              f"{changed} with a verdict that changes:")
    return "\n".join([header, "", *versions.format_timelines(found, platforms=len(matrix.platforms) > 1)])


def _format_unjudged(matrix: Matrix) -> list[str]:
    """Probes that were skipped (they could not judge: e.g. their reference could not be computed), grouped by probe
    and reason: a check the matrix's verdicts silently lack. Every lora_reference on a GPU was skipped so for ten
    days before anyone noticed (a device mismatch in the farm's reference side)."""
    groups: dict[tuple[str, str], list[MatrixCell]] = {}
    for cell in matrix.cells:
        for probe in cell.probe_results:
            if probe.skipped:
                groups.setdefault((probe.name, " ".join(probe.detail.split())), []).append(cell)
    if not groups:
        return []
    lines = ["\nProbes that could not judge (skipped: the verdicts above do not include them):"]
    for (name, detail), cells in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"  {name} in {len(cells)} cell(s): {detail[:200]}")
    return lines


def _status_text(cell: MatrixCell) -> str:
    return f"{cell.status.value}/{cell.kind}" if cell.kind else cell.status.value


def _format_causes(matrix: Matrix) -> list[str]:
    """Root causes (one bug each, with its kind and variants), then failures of the farm's own (no verdict)."""
    labels = {c.cell_id: cell_label(c.model, c.quantization, c.lora, c.engine) for c in matrix.cells}
    variants = {g.signature: g for g in matrix.signatures}
    lines = ["\nRoot causes:"] if matrix.root_causes else []
    for cause in matrix.root_causes:
        where = f" in {cause.function}" if cause.function else ""
        versions_seen = f"; vLLM {', '.join(cause.vllm)}" if cause.vllm else ""
        if len(matrix.platforms) > 1:
            versions_seen += f"; on {' and '.join(cause.platforms)}"
        lines.append(f"[{cause.root_cause}] {cause.kind}: {cause.error_type}{where}: {cause.message[:160]} "
                     f"— {len(cause.cells)} cell(s){versions_seen}")
        for signature in cause.variants:
            group = variants[signature]
            lines.append(f"  variant [{signature}] at {group.frame or '?'}: {group.message[:120]} — {len(group.cells)} cell(s)")
            lines += [f"    {labels.get(cell_id, cell_id)}" for cell_id in group.cells]
        first = variants[cause.variants[0]]
        lines += [f"    | {line}" for line in first.traceback_tail.splitlines()[-TRACEBACK_LINES_SHOWN:]]
    other = [g for g in matrix.signatures if g.kind is None]
    if other:
        lines.append("\nNot verdicts (the farm's own errors, infrastructure):")
    for group in other:
        where = f" at {group.frame}" if group.frame else ""
        lines.append(f"[{group.signature}] {group.error_type}{where}: {group.message[:160]} — {len(group.cells)} cell(s)")
        lines += [f"    {labels.get(cell_id, cell_id)}" for cell_id in group.cells]
    return lines


def _table_line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
