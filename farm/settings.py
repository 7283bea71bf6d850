"""Where the farm keeps things on a node, and what every cell's environment needs: one place for each default.

    $FARM_HOME (default ~/.cache/farm)/
      zoo/          the tiny model zoo ($FARM_ZOO_DIR overrides)
      envs/         the engine env cache ($FARM_ENV_CACHE overrides)
      code/         snapshots of the farm's own code, put on a cell's PYTHONPATH
      vllm-cache/   vLLM's compile caches (VLLM_CACHE_ROOT), one folder per env, shared by a node's cells
      cell-logs/    each attempt's output, read back when its process dies
      spool/        results not yet in the store (an outage loses nothing)
      fault-injection/  the fault-injection seam's build counters
"""

from __future__ import annotations

import os
from pathlib import Path

from farm.errors import EnvBuildError

# Variables an env's preparation sets for a cell's process (farm.envs), read there (farm.cell).
ENV_NOTES_VARIABLE = "FARM_ENV_NOTES"  # JSON list: how the env differs from the release it names
# JSON {"site": the bundle's site folder on the node, "rules": its strip rules}: a cell whose vLLM fails on a file
# a rule removed is the bundle's fault, not a verdict (farm.cell.execute).
BUNDLE_STRIPPED_VARIABLE = "FARM_BUNDLE_STRIPPED"
ENV_IN_USE_VARIABLE = "FARM_ENV_IN_USE"  # the file a cell's process holds a shared lock on while it runs

DEFAULT_STORE = "farm-results"  # a local directory, relative to where `farm` runs; $FARM_STORE overrides

# What the farm's code needs in a cell's env besides vLLM (which brings torch and transformers):
# result models, YAML, the memory sampler, and PEFT for the zoo's adapters and the LoRA reference.
# Kept in step with pyproject.toml (tests/test_envs.py checks); Ray is added pinned to the cluster's version.
FARM_CELL_REQUIREMENTS: tuple[str, ...] = ("pydantic>=2.7,<3", "pyyaml>=6", "jinja2>=3.1", "psutil>=5.9", "peft>=0.17")
FARM_CELL_DISTRIBUTIONS: tuple[str, ...] = ("pydantic", "pyyaml", "jinja2", "psutil", "peft")


def farm_home() -> Path:
    """``$FARM_HOME``, else ``~/.cache/farm``: the root of everything a node keeps."""
    return Path(os.environ.get("FARM_HOME") or Path.home() / ".cache" / "farm").expanduser()


def zoo_dir() -> Path:
    """``$FARM_ZOO_DIR``, else ``$FARM_HOME/zoo``."""
    if os.environ.get("FARM_ZOO_DIR"):
        return Path(os.environ["FARM_ZOO_DIR"]).expanduser()
    return farm_home() / "zoo"


def env_cache_dir() -> Path:
    """``$FARM_ENV_CACHE``, else ``$FARM_HOME/envs``."""
    if os.environ.get("FARM_ENV_CACHE"):
        return Path(os.environ["FARM_ENV_CACHE"]).expanduser()
    return farm_home() / "envs"


def env_cache_budget_bytes() -> int | None:
    """``$FARM_ENV_CACHE_GB`` in bytes: the env cache's disk budget on this node; None: no budget."""
    value = os.environ.get("FARM_ENV_CACHE_GB")
    if not value:
        return None
    try:
        budget = float(value)
    except ValueError:
        raise EnvBuildError(f"FARM_ENV_CACHE_GB={value!r}: give a number of GiB, e.g. 60") from None
    if not budget > 0 or budget == float("inf"):
        raise EnvBuildError(f"FARM_ENV_CACHE_GB={value!r}: give a positive, finite number of GiB, e.g. 60")
    return int(budget * 2**30)


def code_dir() -> Path:
    return farm_home() / "code"


def vllm_cache_dir() -> Path:
    return farm_home() / "vllm-cache"


def cell_log_dir() -> Path:
    return farm_home() / "cell-logs"


def spool_dir() -> Path:
    return farm_home() / "spool"


def fault_counter_dir() -> Path:
    return farm_home() / "fault-injection"


def store_url(url: str | None = None) -> str:
    """The store a command uses: the one given, else ``$FARM_STORE``, else ``farm-results``."""
    return url or os.environ.get("FARM_STORE") or DEFAULT_STORE
