"""``bundle`` engines: an offline vLLM bundle (``farm bundle``) layered on a Python the node already has.

    engines:
      - name: v0.26.0
        kind: bundle
        path: /shared/bundles/vllm-0.26.0/bundle.json    # the same path on every node (parts beside it)
        python: /opt/torch/.venv/bin/python              # the node's Python with torch; the bundle has the rest

For air-gapped nodes: nothing is downloaded. On each node, once, under the env's lock, the
bundle's parts are checked (size and SHA-256, each part named if it is missing or corrupt)
and unpacked into the env cache (``$FARM_ENV_CACHE/<key>/bundle/site``); later cells and runs
find it ready. A cell's actor starts with ``python`` (Ray's ``py_executable``) and
``PYTHONPATH`` = the farm's code snapshot + the bundle's site folder, in front of that Python's
own site-packages, plus the environment variables the bundle records (e.g.
``VLLM_USE_FLASHINFER_SAMPLER=0`` where the bundle leaves FlashInfer out). Before any cell, the
combination is checked like every env: the cluster's Python and Ray, vLLM (the bundle's
version), and the farm's own requirements; then ``from vllm import LLM`` runs once with the
bundle (what every cell does first): a bundle that leaves out something vLLM imports is the
engine's ``env_error``, naming the package, never a failed cell of every combination.

A failed unpack is not cached (unlike a failed pip build): the fix is to copy a part again,
and the next preparation retries at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from farm.bundles import pack
from farm.bundles.imports import within
from farm.bundles.make import missing_files
from farm.bundles.resolve import LEFT_OUT
from farm.envs import cache, interpreter
from farm.envs.build import actor_env_vars, compile_cache_env, farm_code
from farm.envs.registry import EnvKind, NodeContext, PreparedEnv, Stopwatch, register
from farm.errors import EnvBuildError
from farm.model.engines import BundleEngine, EngineSpec
from farm.settings import BUNDLE_STRIPPED_VARIABLE, FARM_CELL_DISTRIBUTIONS, code_dir

UNPACKED = "bundle"  # under the env's cache directory; its site/ goes on PYTHONPATH


@register
class Bundle(EnvKind):
    name = "bundle"
    spec = BundleEngine

    def prepare(self, engine: EngineSpec, node: NodeContext) -> PreparedEnv:
        assert isinstance(engine, BundleEngine)
        clock = Stopwatch()
        where = f"bundle {engine.path} (engine {engine.name!r}) on {socket.gethostname()}"
        try:
            document = pack.read_manifest(Path(engine.path))
        except pack.BundleError as exc:
            raise EnvBuildError(f"{where}: {exc}") from None
        if not Path(engine.python).exists():
            raise EnvBuildError(f"{where}: no {engine.python} on this node; give the node's Python with torch as `python`")
        key = cache.key_of({"kind": "bundle", "archive": document["archive"]["sha256"], "python": engine.python,
                            "machine": os.uname().machine})
        built = False
        found = cache.read(key)
        if not self._ready(found, key, node):
            with cache.locked(key):
                found = cache.read(key)  # another process may have unpacked it while we waited
                if not self._ready(found, key, node):
                    found = self._unpack(engine, node, key, document, where)
                    built = True
        assert found is not None
        if engine.name not in found.engines:
            found.engines.append(engine.name)
            cache.write(found)
        site = cache.env_dir(key) / UNPACKED / pack.SITE
        env_vars = {**actor_env_vars(farm_code(code_dir()), site), **document.get("env", {}), **compile_cache_env(key),
                    BUNDLE_STRIPPED_VARIABLE: json.dumps({"site": str(site),
                                                          "rules": [r["pattern"] for r in document.get("stripped", [])]})}
        return PreparedEnv(
            engine=engine.name,
            kind=engine.kind,
            hostname=socket.gethostname(),
            runtime_env={"py_executable": engine.python, "env_vars": env_vars},
            key=key,
            path=str(site),
            versions=found.versions,
            built=built,
            seconds=clock(),
        )

    def _ready(self, found: cache.EnvManifest | None, key: str, node: NodeContext) -> bool:
        if found is None or not found.ready:
            return False
        if node.rebuild_before is not None and found.built_at < node.rebuild_before:
            return False
        return (cache.env_dir(key) / UNPACKED / pack.SITE).is_dir()

    def _unpack(self, engine: BundleEngine, node: NodeContext, key: str, document: dict[str, Any],
                where: str) -> cache.EnvManifest:
        clock = Stopwatch()
        path = cache.reset(key)
        try:
            pack.unpack(Path(engine.path), path / UNPACKED)
            site = path / UNPACKED / pack.SITE
            _check_complete(site, document, where)
            versions = interpreter.probe([engine.python], required=FARM_CELL_DISTRIBUTIONS, pythonpath=[str(site)])
            interpreter.check_versions(versions, node, where=where)
            problems = []
            if (versions.python or "").split(".")[:2] != str(document.get("python", "")).split(".")[:2]:
                problems.append(f"it is for Python {document.get('python')}, and {engine.python} is Python {versions.python}")
            if versions.missing:
                problems.append(f"{engine.python} with the bundle lacks {', '.join(versions.missing)}, which the farm's "
                                "code needs in a cell (make the bundle with this farm: it adds them)")
            if versions.vllm != document.get("vllm"):
                problems.append(f"vLLM {versions.vllm} is what {engine.python} imports with it, not the bundle's "
                                f"{document.get('vllm')}: is the bundle's site folder shadowed?")
            if problems:
                raise EnvBuildError(f"{where}: " + "; and ".join(problems))
            _check_vllm_imports(engine, site, document, where)
        except (EnvBuildError, pack.BundleError) as exc:
            shutil.rmtree(path, ignore_errors=True)  # not cached: copying a part again fixes it, retry at once
            message = exc.message if isinstance(exc, EnvBuildError) else f"{where}: {exc}"
            raise EnvBuildError(message, log_tail=getattr(exc, "log_tail", "")) from None
        manifest = cache.EnvManifest(
            key=key, status="ready", kind=engine.kind, engines=[engine.name],
            spec={"bundle": engine.path, "name": document.get("name"), "archive_sha256": document["archive"]["sha256"],
                  "python": engine.python},
            hostname=socket.gethostname(), built_at=time.time(), build_s=clock(), python=engine.python,
            versions=versions, size_bytes=cache.directory_size(path),
        )
        cache.write(manifest)
        return manifest

    def describe(self, engine: Any) -> str:
        return f"bundle: {engine.path} on {engine.python}"


# What every cell does first (farm.cell.engine). A bundle is the farm's own selection of vLLM's requirements: if
# vLLM does not import with it, every cell would fail there for the farm's reason, not vLLM's.
VLLM_IMPORT = "from vllm import LLM"
_MISSING = re.compile(r"No module named '([\w.]+)'|cannot import name '(\w+)' from '([\w.]+)'")


def _check_complete(site: Path, document: dict[str, Any], where: str) -> None:
    """Raise ``EnvBuildError`` when the site folder lacks files its packages' RECORDs list and no strip rule of the
    bundle removed (a bundle made before `farm bundle` checked its installs: 0.20.0's lacked opentelemetry-api's
    modules, and the first thing to fail was Ray's dashboard agent, far from the cause)."""
    missing = missing_files(site, [rule["pattern"] for rule in document.get("stripped", [])])
    if missing:
        shown = "; ".join(f"{dist} ({len(paths)}, e.g. {paths[0]})" for dist, paths in sorted(missing.items()))
        raise EnvBuildError(f"{where}: the bundle lacks files its packages' RECORDs list: {shown}; make it again "
                            "with this farm (`farm bundle` now checks every install against the RECORDs)")


def _check_vllm_imports(engine: BundleEngine, site: Path, document: dict[str, Any], where: str) -> None:
    """Raise ``EnvBuildError`` unless ``from vllm import LLM`` runs with the bundle, naming what it left out that
    the failed import needs."""
    failed = interpreter.import_check(engine.python, VLLM_IMPORT, pythonpath=[str(site)], env=document.get("env", {}))
    if failed is None:
        return
    last, output = failed
    hint = ""
    if found := _MISSING.search(last):
        module = found.group(1) or f"{found.group(3)}.{found.group(2)}"
        names = [item["name"] for item in document.get("left_out", [])
                 if item["name"] in LEFT_OUT and within(module, LEFT_OUT[item["name"]].imports)]
        if names:
            hint = (f"; the bundle left out {', '.join(names)}, which provides {module}: make it again with this farm "
                    f"(its import walk keeps what vLLM and the packages it ships import) or with --extra {names[0]}")
    raise EnvBuildError(f"{where}: vLLM does not import with this bundle (`{VLLM_IMPORT}`: {last}){hint}",
                        log_tail=output)
