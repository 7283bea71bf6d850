"""Preparing an engine's env on the node a cell was placed on: the node-side half of ``farm.envs``.

``prepare_here`` runs inside a small Ray task in the cluster's own environment, in the
cell's placement group, so the cell's actor then starts on the same node in the env
it returns. It never raises: a failure comes back as an ``EnvFailure`` with the log tail.
"""

from __future__ import annotations

import platform
import socket
import sys
import traceback

from pydantic import BaseModel, ConfigDict, TypeAdapter

from farm.envs.registry import EnvFailure, NodeContext, PreparedEnv, Stopwatch, kind_of
from farm.errors import EnvBuildError
from farm.model.engines import Engine, EngineSpec

_ENGINE = TypeAdapter(Engine)


def node_context(rebuild_before: float | None = None) -> NodeContext:
    """This process's interpreter and Ray: the cluster's, which every env must match."""
    import ray

    return NodeContext(
        python=sys.executable,
        python_version=platform.python_version(),
        ray_version=ray.__version__,
        rebuild_before=rebuild_before,
    )


def prepare_here(engine: EngineSpec, rebuild_before: float | None = None) -> PreparedEnv | EnvFailure:
    """Prepare ``engine``'s env on this node: a ``PreparedEnv``, or an ``EnvFailure`` saying why not."""
    clock = Stopwatch()
    try:
        prepared = kind_of(engine).prepare(engine, node_context(rebuild_before))
    except EnvBuildError as exc:
        return EnvFailure(engine=engine.name, kind=engine.kind, hostname=socket.gethostname(), message=exc.message,
                          log_tail=exc.log_tail, cached=exc.cached, seconds=clock())
    except Exception as exc:  # a bug or an unforeseen node problem: still this engine's env_error, with the trace
        return EnvFailure(engine=engine.name, kind=engine.kind, hostname=socket.gethostname(),
                          message=f"preparing the env failed unexpectedly: {type(exc).__name__}: {exc}",
                          log_tail=traceback.format_exc()[-6000:], seconds=clock())
    import ray

    if ray.is_initialized():  # outside Ray (`farm env build`) there is no node id, and asking would start a Ray
        prepared.node_id = ray.get_runtime_context().get_node_id()
    return prepared


class _Outcome(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prepared: PreparedEnv | None = None
    failure: EnvFailure | None = None


def prepare_task(engine_json: str, rebuild_before: float | None) -> str:
    """The Ray task's body: JSON in, JSON out, so the driver and the node share no pickled classes."""
    outcome = prepare_here(_ENGINE.validate_json(engine_json), rebuild_before)
    wrapped = _Outcome(prepared=outcome) if isinstance(outcome, PreparedEnv) else _Outcome(failure=outcome)
    return wrapped.model_dump_json()


def parse_outcome(text: str) -> PreparedEnv | EnvFailure:
    outcome = _Outcome.model_validate_json(text)
    if outcome.prepared is not None:
        return outcome.prepared
    assert outcome.failure is not None
    return outcome.failure
