"""Taking back verdicts that were the farm's own failure, after the fact: ``farm retract RUN``.

A verdict is vLLM's behaviour, measured. When it turns out that some were not (the H100 history of
2026-12-06: two bundles lacked a package their fastapi imports, and 70 cells "failed" at ``from vllm
import LLM``), an operator retracts them: each selected cell gets one more attempt document, an
``infra_error`` whose error (type ``retracted``, origin ``farm``) says who retracted it, when, why,
and what the verdict was. Nothing is deleted or rewritten: the earlier attempts stay in the store
and in ``previous_attempts``. The run is aggregated again, so its matrix and page show the cells as
the farm's failure, the job's history no longer counts them, and ``farm run --resume RUN`` runs them
again.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Sequence

from farm.cell.signature import signature_of
from farm.errors import FarmError
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, utcnow
from farm.report.aggregate import aggregate
from farm.store import Store, put_result, read_manifest, scan_run


class RetractError(FarmError):
    """What to retract was not named, or names nothing in the run."""


def retract(store: Store, run_id: str, *, why: str, engines: Sequence[str] = (), cells: Sequence[str] = (),
            by: str | None = None) -> list[CellResult]:
    """Retract the verdicts of ``run_id``'s cells on ``engines`` and of ``cells`` (ids); returns the documents written.

    Cells whose latest attempt is already no verdict (an infra or env error) are left as they are.

    Raises:
        RetractError: no reason, nothing selected, or an engine or cell id the run does not have.
    """
    if not why.strip():
        raise RetractError("--why: say why these verdicts are the farm's and not vLLM's (it is kept with them)")
    if not engines and not cells:
        raise RetractError("name what to retract: --engine NAME (every cell of that engine) or --cell CELL_ID")
    manifest = read_manifest(store, run_id)  # its own error names a run that is not in the store
    known_engines = sorted({cell.engine.name for cell in manifest.cells})
    known_cells = {cell.id for cell in manifest.cells}
    if unknown := [e for e in engines if e not in known_engines]:
        raise RetractError(f"--engine {unknown[0]}: run {run_id} has no such engine; its engines: {', '.join(known_engines)}")
    if unknown := [c for c in cells if c not in known_cells]:
        raise RetractError(f"--cell {unknown[0]}: run {run_id} has no such cell (`farm matrix {run_id} --json` lists "
                           "each cell's cell_id)")
    by = by or f"{getpass.getuser()}@{socket.gethostname()}"
    now = utcnow()
    reason = " ".join(why.split())
    written = []
    for result in scan_run(store, run_id).latest.values():
        if result.cell.engine.name not in engines and result.cell_id not in cells:
            continue
        if not result.status.is_verdict():
            continue
        was = result.status.value + (f" [{result.error.signature}]" if result.error and result.error.signature else "")
        document = CellResult(
            run_id=run_id, cell_id=result.cell_id, cell=result.cell, attempt=result.attempt + 1,
            status=CellStatus.INFRA_ERROR, retry_reason=f"retracted: {why}",
            previous_attempts=[*result.previous_attempts, result.summary()],
            # One signature per reason: the matrix lists the retracted cells together, under the farm's own errors.
            error=ErrorInfo(type="retracted", origin="farm", normalized_message=reason,
                            signature=signature_of("retracted", reason, None, None),
                            message=f"attempt {result.attempt}'s verdict ({was}) retracted by {by} at "
                                    f"{now:%Y-%m-%d %H:%M:%S}Z: {why.strip()}"),
            env=EnvFacts(hostname=result.env.hostname), started_at=now, finished_at=now,
        )
        put_result(store, document)
        written.append(document)
    aggregate(store, run_id)
    return written


__all__ = ["RetractError", "retract"]
