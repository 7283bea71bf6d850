"""`farm env build | list | clean`: the engine envs (one per vLLM version) cached on this node."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from farm.cli.common import EXIT_FARM_ERROR


def add_parsers(sub: Any) -> None:
    env = sub.add_parser("env", help="the engine envs (one per vLLM version) cached on this node")
    env_sub = env.add_subparsers(metavar="ACTION")
    env_build = env_sub.add_parser("build", help="build (or check) a job's engine envs on this node; cached")
    env_build.add_argument("job", type=Path)
    env_build.add_argument("--engine", nargs="+", metavar="NAME", help="only these engines")
    env_build.add_argument("--rebuild", action="store_true", help="rebuild even if cached")
    env_build.set_defaults(handler=_env_build)
    env_list = env_sub.add_parser("list", help="the env cache on this node ($FARM_ENV_CACHE or $FARM_HOME/envs)")
    env_list.set_defaults(handler=_env_list)
    env_clean = env_sub.add_parser("clean", help="remove cached envs: by key or engine name, failed ones, or all")
    env_clean.add_argument("which", nargs="*", metavar="KEY_OR_ENGINE")
    env_clean.add_argument("--failed", action="store_true", help="every failed build (their next run retries them)")
    env_clean.add_argument("--all", action="store_true", help="every env in the cache")
    env_clean.set_defaults(handler=_env_clean)


def _env_build(args: argparse.Namespace) -> int:
    from farm.envs import EnvFailure, cache, kind_of
    from farm.envs.node import prepare_here
    from farm.errors import EngineEnvError
    from farm.model.spec import load_job

    job = load_job(args.job)
    engines = [e for e in job.engines if not args.engine or e.name in args.engine]
    unknown = sorted(set(args.engine or []) - {e.name for e in job.engines})
    if unknown:
        raise EngineEnvError(f"{args.job} has no engine {', '.join(map(repr, unknown))}; "
                             f"its engines: {', '.join(e.name for e in job.engines)}")
    rebuild_before = time.time() if args.rebuild else None
    failed = 0
    for engine in engines:
        if kind_of(engine).in_driver_env:
            print(f"{engine.name:<16} {engine.kind:<8} nothing to build: {kind_of(engine).describe(engine)}")
            continue
        print(f"{engine.name:<16} {engine.kind:<8} preparing: {kind_of(engine).describe(engine)}", flush=True)
        outcome = prepare_here(engine, rebuild_before)
        if isinstance(outcome, EnvFailure):
            failed += 1
            print(f"{engine.name:<16} {engine.kind:<8} env_error: {outcome.message}", file=sys.stderr)
            tail = outcome.log_tail.rstrip().splitlines()[-20:]
            print("\n".join(f"    | {line}" for line in tail), file=sys.stderr)
            continue
        manifest = cache.read(outcome.key) if outcome.key else None
        size = f"{manifest.size_bytes / 2**30:.1f} GiB" if manifest and manifest.size_bytes else ""
        how = f"built in {outcome.seconds:.0f}s" if outcome.built else f"ready ({outcome.seconds:.1f}s)"
        vllm = f"{outcome.versions.vllm_dist or 'vllm'} {outcome.versions.vllm}"
        print(f"{engine.name:<16} {engine.kind:<8} {how}: {vllm}, torch {outcome.versions.torch}, "
              f"Python {outcome.versions.python}, Ray {outcome.versions.ray}  {size}  {outcome.path}")
        for line in [*outcome.versions.notes, *outcome.evicted]:
            print(f"{'':<16} {'':<8} {line}")
    return EXIT_FARM_ERROR if failed else 0


def _env_list(args: argparse.Namespace) -> int:
    from farm.envs import cache

    entries = cache.entries()
    print(f"env cache {cache.root()}: {len(entries)} env(s)")
    rows = [("key", "status", "engines", "vllm", "python", "ray", "size", "built at", "build")]
    for key, manifest in entries:
        if manifest is None:
            rows.append((key, "partial", "", "", "", "", "", "", ""))
            continue
        v = manifest.versions
        rows.append((key, manifest.status, ",".join(manifest.engines), f"{v.vllm_dist or ''} {v.vllm or ''}".strip(),
                     v.python or "", v.ray or "", f"{manifest.size_bytes / 2**30:.1f}G" if manifest.size_bytes else "",
                     manifest.built_at_text, f"{manifest.build_s:.0f}s"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def _env_clean(args: argparse.Namespace) -> int:
    from farm.envs import cache
    from farm.errors import EngineEnvError

    if not (args.which or args.failed or args.all):
        raise EngineEnvError("say which envs to remove: keys or engine names (see `farm env list`), --failed, or --all")
    removed = 0
    for key, manifest in cache.entries():
        named = key in args.which or bool(manifest and set(manifest.engines) & set(args.which))
        wanted = args.all or named or (args.failed and manifest is not None and not manifest.ready)
        if wanted and cache.remove(key):
            removed += 1
            print(f"removed {key} ({','.join(manifest.engines) if manifest else 'partial'})")
    print(f"{removed} env(s) removed from {cache.root()}")
    return 0
