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
from dataclasses import dataclass

from farm.model.matrix import EngineGroup, MatrixCell, PlatformDifference, PlatformOutcome, VersionChange
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


def grouped_columns(columns: Sequence[str], cells: Sequence[MatrixCell], order: Sequence[str],
                    platforms: Sequence[str] = ()) -> list[str]:
    """Columns grouped per platform (in ``platforms``' order), then per engine in ``order``; within a group,
    LoRA columns keep their first-seen order."""
    axes_of = {c.column: (c.platform, c.engine) for c in cells}
    rank = {name: i for i, name in enumerate(order)}
    platform_rank = {name: i for i, name in enumerate(platforms)}
    position = {col: i for i, col in enumerate(columns)}

    def key(col: str) -> tuple[int, int, int]:
        platform, engine = axes_of.get(col, (None, ""))
        return platform_rank.get(platform or "", len(platform_rank)), rank.get(engine, len(rank)), position[col]

    return sorted(columns, key=key)


def engine_groups(kinds: dict[tuple[str | None, str], str], cells: Sequence[MatrixCell], columns: Sequence[str]) -> list[EngineGroup]:
    """One group per engine and platform, in the order of ``columns`` (see grouped_columns); ``kinds``: each
    one's engine kind (two runs may name different engines alike)."""
    by_engine: dict[tuple[str | None, str], list[MatrixCell]] = {}
    for cell in cells:
        by_engine.setdefault((cell.platform, cell.engine), []).append(cell)
    first_column = {col: i for i, col in enumerate(columns)}
    groups = []
    for (platform, name), mine in sorted(by_engine.items(), key=lambda item: min(first_column.get(c.column, 0) for c in item[1])):
        present = {c.column for c in mine}
        groups.append(EngineGroup(
            engine=name,
            kind=kinds.get((platform, name), "current"),
            platform=platform,
            columns=[col for col in columns if col in present],
            vllm=sorted({c.vllm for c in mine if c.vllm}),
            vllm_commit=sorted({c.vllm_commit for c in mine if c.vllm_commit}),
            vllm_dist=sorted({c.vllm_dist for c in mine if c.vllm_dist}),
        ))
    return groups


def outcome(cell: MatrixCell) -> tuple[str, str]:
    # The root cause, not the signature: a bug whose line or file moved between versions did not change.
    return cell.status.value, cell.root_cause or cell.signature or ",".join(cell.failed_probes)


def first_changes(cells: Sequence[MatrixCell], order: Sequence[str]) -> list[VersionChange]:
    """Per combination whose outcome is not the same on every engine that ran it: where it first changed.
    Versions are compared on one platform at a time: a CPU release next to a GPU release is no version change."""
    by_combination: dict[tuple[str, str, str | None], dict[str, MatrixCell]] = {}
    for cell in cells:
        by_combination.setdefault((cell.row, cell.lora, cell.platform), {})[cell.engine] = cell
    changes = []
    for (row, lora, platform), per_engine in by_combination.items():
        ran = [per_engine[name] for name in order if name in per_engine and per_engine[name].status.is_verdict()]
        steps = [(a, b) for a, b in zip(ran, ran[1:]) if outcome(a) != outcome(b)]
        if not steps:
            continue
        before, after = steps[0]
        changes.append(VersionChange(
            row=row, lora=lora, model=after.model, quantization=after.quantization,
            engine=after.engine, previous_engine=before.engine,
            before=before.status.value, after=after.status.value,
            before_signature=before.signature, after_signature=after.signature,
            before_root_cause=before.root_cause, after_root_cause=after.root_cause,
            before_vllm=before.vllm, after_vllm=after.vllm, changes=len(steps), platform=platform,
        ))
    return changes


@dataclass(frozen=True)
class Stretch:
    """Adjacent engines, in the job's order, on which a combination had one outcome; ``cell`` (the first
    engine's) stands for them all."""

    first: str
    last: str
    cell: MatrixCell


@dataclass(frozen=True)
class Timeline:
    """One combination's outcomes along the versions, on one platform: what `farm matrix --by-version` prints."""

    model: str
    quantization: str
    lora: str
    platform: str | None
    stretches: list[Stretch]

    @property
    def verdict_changes(self) -> bool:
        """Whether its verdict differs between versions (cells without a verdict say nothing either way)."""
        return len({outcome(s.cell) for s in self.stretches if s.cell.status.is_verdict()}) > 1


def timelines(cells: Sequence[MatrixCell], order: Sequence[str], *, changed_only: bool = False) -> list[Timeline]:
    """Per combination (and platform), its runs of one outcome along ``order``. A cell without a verdict (not
    run, infra or env error) is a stretch of its own status: shown, never merged into a verdict's stretch."""
    by_combination: dict[tuple[str, str, str, str | None], dict[str, MatrixCell]] = {}
    for cell in cells:
        by_combination.setdefault((cell.model, cell.quantization, cell.lora, cell.platform), {})[cell.engine] = cell
    found = []
    for (model, quantization, lora, platform), per_engine in by_combination.items():
        stretches: list[Stretch] = []
        for name in (n for n in order if n in per_engine):
            cell = per_engine[name]
            if stretches and _same_outcome(stretches[-1].cell, cell):
                stretches[-1] = Stretch(stretches[-1].first, name, stretches[-1].cell)
            else:
                stretches.append(Stretch(name, name, cell))
        timeline = Timeline(model, quantization, lora, platform, stretches)
        if timeline.verdict_changes or not changed_only:
            found.append(timeline)
    return found


def _same_outcome(a: MatrixCell, b: MatrixCell) -> bool:
    if a.status.is_verdict() != b.status.is_verdict():
        return False
    return outcome(a) == outcome(b) if a.status.is_verdict() else a.status == b.status


def format_timelines(found: Sequence[Timeline], *, platforms: bool = False, message_chars: int = 110) -> list[str]:
    """Each combination (and its platform, with ``platforms``), then one line per stretch: the engines, the
    status and kind, where and why it failed."""
    lines = []
    for timeline in found:
        on = f" · {timeline.platform}" if platforms and timeline.platform else ""
        lines.append(f"{timeline.model} · {timeline.quantization} · {timeline.lora}{on}")
        spans = [s.first if s.first == s.last else f"{s.first} … {s.last}" for s in timeline.stretches]
        width = max(len(span) for span in spans)
        for span, stretch in zip(spans, timeline.stretches):
            lines.append(f"  {span.ljust(width)}  {_outcome_text(stretch.cell, message_chars)}".rstrip())
    return lines


def _outcome_text(cell: MatrixCell, message_chars: int) -> str:
    status = f"{cell.status.value} ({cell.kind})" if cell.kind else cell.status.value
    if cell.error_type or cell.error_message:
        message = (cell.error_message or "").strip().splitlines()
        first = message[0] if message else ""
        if len(first) > message_chars:
            first = first[: message_chars - 1] + "…"
        where = f" at {cell.frame}" if cell.frame else ""
        probe = f" in probe {cell.error_probe}" if cell.error_probe else ""
        return f"{status}{where}{probe}: {cell.error_type or 'error'}: {first}"
    if cell.failed_probes:
        return f"{status}: probes {', '.join(cell.failed_probes)} failed"
    return status


def platform_differences(cells: Sequence[MatrixCell], platforms: Sequence[str]) -> list[PlatformDifference]:
    """Per combination measured on several platforms whose verdict differs between them.

    Compared on the newest vLLM release that every such platform measured, so the platform is the only
    difference; where no release is shared, each platform's newest release (``release`` None says so).
    """
    if len(platforms) < 2:
        return []
    by_combination: dict[tuple[str, str], dict[str, list[MatrixCell]]] = {}
    for cell in cells:
        if cell.platform and cell.status.is_verdict():
            by_combination.setdefault((cell.row, cell.lora), {}).setdefault(cell.platform, []).append(cell)
    differences = []
    for (row, lora), per_platform in by_combination.items():
        if len(per_platform) < 2:
            continue
        releases = [{_release(c.vllm) for c in mine if c.vllm} for mine in per_platform.values()]
        shared = sorted(set.intersection(*releases), key=release_order)
        release = shared[-1] if shared else None
        chosen = [_newest(mine, release) for mine in per_platform.values()]
        if len({outcome(c) for c in chosen}) < 2:
            continue
        first = chosen[0]
        differences.append(PlatformDifference(
            row=row, lora=lora, model=first.model, quantization=first.quantization, release=release,
            outcomes=[PlatformOutcome(platform=c.platform or "", engine=c.engine, cell_id=c.cell_id, vllm=c.vllm,
                                      status=c.status.value, kind=c.kind, root_cause=c.root_cause, signature=c.signature)
                      for c in sorted(chosen, key=lambda c: platforms.index(c.platform) if c.platform in platforms else len(platforms))],
        ))
    return differences


def _release(version: str) -> str:
    """The release a version string names: 0.11.1+cpu and 0.11.1 are one release on two platforms."""
    return version.split("+")[0]


def _newest(cells: list[MatrixCell], release: str | None) -> MatrixCell:
    eligible = [c for c in cells if c.vllm and (release is None or _release(c.vllm) == release)] or cells
    return max(eligible, key=lambda c: release_order(c.vllm or ""))


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


def platform_header(groups: Sequence[EngineGroup], columns: Sequence[str], widths: list[int], gap: int = 2) -> str:
    """A line above the engines' naming each platform over its columns (``widths`` as group_header left them)."""
    out = " " * (widths[0] + gap)
    spans: list[tuple[str, list[int]]] = []
    for group in groups:
        index = [columns.index(col) + 1 for col in group.columns]
        if spans and spans[-1][0] == (group.platform or ""):
            spans[-1][1].extend(index)
        else:
            spans.append((group.platform or "", index))
    for label, index in spans:
        span = sum(widths[i] + gap for i in index) - gap
        out += f"── {label} ".ljust(span, "─") + " " * gap
    return out.rstrip()


def format_platform_differences(differences: Sequence[PlatformDifference]) -> list[str]:
    lines = []
    for difference in differences:
        where = f"vLLM {difference.release}" if difference.release else "no release measured on both: each platform's newest"
        lines.append(f"  {difference.row} · {difference.lora} ({where}):")
        for seen in difference.outcomes:
            cause = seen.root_cause or seen.signature
            verdict = seen.status + (f"/{seen.kind}" if seen.kind else "") + (f" [{cause}]" if cause else "")
            lines.append(f"    {seen.platform}: {verdict} on {seen.engine} (vLLM {seen.vllm or '?'})")
    return lines


def format_changes(changes: Sequence[VersionChange], platforms: bool = False) -> list[str]:
    """One line per change; ``platforms``: name each one's platform (a matrix of runs on several)."""
    lines = []
    for change in changes:
        before_cause, after_cause = change.before_root_cause or change.before_signature, change.after_root_cause or change.after_signature
        before = change.before + (f" [{before_cause}]" if before_cause else "")
        after = change.after + (f" [{after_cause}]" if after_cause else "")
        more = f" ({change.changes} changes along the versions)" if change.changes > 1 else ""
        on = f" [{change.platform}]" if platforms and change.platform else ""
        lines.append(f"  {change.row} · {change.lora}{on}: {before} on {change.previous_engine} → {after} on {change.engine}{more}")
    return lines
