"""Looking inside another environment's interpreter: what it holds, and whether Ray can start workers on it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from farm.cell import facts
from farm.envs.registry import EnvVersions, NodeContext
from farm.errors import EnvBuildError

PROBE_TIMEOUT_S = 120  # reading metadata takes a second; a wedged NFS mount should not hang a cell forever
FACTS_SOURCE = Path(facts.__file__).read_text()


def probe(command: Sequence[str], *, required: Sequence[str] = (), timeout: float = PROBE_TIMEOUT_S,
          pythonpath: Sequence[str] = ()) -> EnvVersions:
    """Run ``farm.cell.facts`` with ``command`` (an interpreter, or e.g. ``podman run … python``).

    ``required`` names distributions whose absence the result lists in ``missing``; ``pythonpath``
    is what the cell's actor will have on PYTHONPATH (a bundle's site folder), nothing else.

    Raises:
        EnvBuildError: the interpreter does not run or prints no facts; the message has its output.
    """
    argv = [*command, "-c", FACTS_SOURCE, *required]
    shown = " ".join(command)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_isolated(pythonpath))
    except FileNotFoundError:
        raise EnvBuildError(f"{shown}: no such interpreter on this node") from None
    except subprocess.TimeoutExpired:
        raise EnvBuildError(f"{shown}: reading the env's versions took over {timeout:.0f}s") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise EnvBuildError(f"{shown} could not report its versions (exit {out.returncode})", log_tail=(out.stdout + out.stderr)[-4000:])
    try:
        return EnvVersions.model_validate(json.loads(lines[-1]))
    except ValueError:
        raise EnvBuildError(f"{shown} printed no version facts", log_tail=(out.stdout + out.stderr)[-4000:]) from None


def _isolated(pythonpath: Sequence[str]) -> dict[str, str]:
    """-I-like isolation without -I (which would drop the env's own site-packages): no user site, and no PYTHONPATH
    but ``pythonpath``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


def python_match_level() -> str:
    """Ray's own rule for Python versions across a cluster: ``patch`` unless the operator relaxed it."""
    return os.environ.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch")


def check_versions(found: EnvVersions, node: NodeContext, where: str) -> None:
    """Raise unless ``found`` has the cluster's Python and Ray: Ray starts workers on no other.

    Raises:
        EnvBuildError: naming both sides and what to do.
    """
    problems: list[str] = []
    level = python_match_level()
    parts = 2 if level == "minor" else 3
    if (found.python or "").split(".")[:parts] != node.python_version.split(".")[:parts]:
        problems.append(f"Python {found.python or '?'} where the cluster runs Python {node.python_version} "
                        f"(Ray requires the same {'major.minor' if parts == 2 else 'major.minor.patch'}): "
                        f"make the env with {node.python}")
    if found.ray is None:
        problems.append(f"no Ray, where the cluster runs Ray {node.ray_version}: install ray=={node.ray_version} into it")
    elif found.ray != node.ray_version:
        problems.append(f"Ray {found.ray} where the cluster runs Ray {node.ray_version}: install ray=={node.ray_version} into it")
    if problems:
        raise EnvBuildError(f"{where} does not match the cluster: it has " + "; and ".join(problems))


IMPORT_TIMEOUT_S = 600  # vLLM's import takes 10-20 s (more on a loaded node); a hang is the env's failure too


def import_check(python: str, module_code: str, *, pythonpath: Sequence[str] = (), env: dict[str, str] | None = None,
                 timeout: float = IMPORT_TIMEOUT_S) -> tuple[str, str] | None:
    """Run ``module_code`` (e.g. ``from vllm import LLM``) in ``python`` with ``pythonpath`` in front, isolated as
    :func:`probe` is; None if it ran, else the last line it printed (the exception) and its output's tail."""
    try:
        out = subprocess.run([python, "-c", module_code], capture_output=True, text=True, timeout=timeout,
                             env={**_isolated(pythonpath), **(env or {})})
    except subprocess.TimeoutExpired:
        return f"`{module_code}` did not finish in {timeout:.0f}s", ""
    if out.returncode == 0:
        return None
    text = (out.stdout + out.stderr).strip()
    return (text.splitlines()[-1] if text else f"exit {out.returncode}"), text[-4000:]
