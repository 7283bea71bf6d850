"""The known-bug ledger: what vLLM's tracker says about a bug's version window, checked against measured verdicts.

``jobs/known_bugs.yaml`` lists bugs: a tracker reference, the combination (zoo cell axes, globs
allowed), the platform, what the failure looks like, and the published window (the first release
that has it, the first that fixed it). ``farm known-bugs check RUN …`` reads those runs' matrices and
says, per bug:

- **rediscovered**: every measured release inside the window shows the failure, and every one
  outside it does not;
- **contradicted**: a measured release disagrees with the window (the evidence names it: release,
  status, signature, message);
- **not reproducible**: no run measured the combination on the bug's platform, or it never fails
  that way on any measured release (a fidelity gap of the zoo or the platform: said with why).

The ledger is only ever compared with measured results: nothing of it is written into a result.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from farm.errors import JobSpecError
from farm.model.base import StrictModel, one_line
from farm.model.matrix import LedgerCheck, LedgerFinding, Matrix, MatrixCell
from farm.model.results import CellStatus, EnvFacts, utcnow
from farm.report.versions import release_order

Verdict = Literal["rediscovered", "contradicted", "not reproducible"]


class Combination(StrictModel):
    model: str = "*"
    quantization: str = "*"
    lora: str = "*"

    def matches(self, cell: MatrixCell) -> bool:
        return all(fnmatch.fnmatchcase(value, glob) for value, glob in
                   ((cell.model, self.model), (cell.quantization, self.quantization), (cell.lora, self.lora)))


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


def check(bug: KnownBug, matrices: list[Matrix]) -> Finding:
    """The bug's window against every cell of ``matrices`` on its combination and platform."""
    measured: dict[str, list[tuple[MatrixCell, bool]]] = {}
    for matrix in matrices:
        for cell in matrix.cells:
            if not cell.vllm or not cell.status.is_verdict() or not bug.combination.matches(cell):
                continue
            if bug.platform != "any" and _platform(matrix.envs, cell) != bug.platform:
                continue
            if _patched(matrix.envs, cell):  # not the published release: a fix under test (engine patches)
                continue
            measured.setdefault(cell.vllm, []).append((cell, bug.failure.seen_in(cell)))
    if not measured:
        return Finding(bug, "not reproducible", f"no run measured {_describe(bug)} on the {bug.platform} platform")
    if not any(seen for cells in measured.values() for _, seen in cells):
        return Finding(bug, "not reproducible", f"{_describe(bug)} never fails this way on the "
                       f"{len(measured)} release(s) measured ({', '.join(sorted(measured, key=release_key))}): "
                       "a fidelity gap of the zoo or the platform", _evidence(measured))
    since, fixed = release_key(bug.window.since), release_key(bug.window.fixed) if bug.window.fixed else None
    against = []
    for version, cells in sorted(measured.items(), key=lambda item: release_key(item[0])):
        inside = since <= release_key(version) and (fixed is None or release_key(version) < fixed)
        for cell, seen in cells:
            if seen != inside:
                against.append(f"{version}: {cell.row} · {cell.lora} is {cell.status.value}"
                               f"{' ' + (cell.signature or '') if cell.signature else ''}: {(cell.error_message or '')[:160]} "
                               f"({'inside' if inside else 'outside'} the published window)")
    if against:
        return Finding(bug, "contradicted", f"{len(against)} measured cell(s) disagree with the window "
                       f"{bug.window.since} … {bug.window.fixed or 'unfixed'}", against)
    return Finding(bug, "rediscovered", f"every measured release agrees with the window {bug.window.since} … "
                   f"{bug.window.fixed or 'unfixed'} ({len(measured)} release(s))", _evidence(measured))


def _describe(bug: KnownBug) -> str:
    c = bug.combination
    return f"{c.model}/{c.quantization}/{c.lora}"


def _evidence(measured: dict[str, list[tuple[MatrixCell, bool]]]) -> list[str]:
    lines = []
    for version, cells in sorted(measured.items(), key=lambda item: release_key(item[0])):
        seen = sum(1 for _, hit in cells if hit)
        lines.append(f"{version}: {seen} of {len(cells)} cell(s) show it")
    return lines


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
