"""Benchmark on a GPU machine: cells packed onto one GPU against one cell at a time; a compile cache's worth.

    python -m bench.gpu warm --job jobs/gpu_smoke.yaml --share 0.125 [--num-cpus 1] --out DIR
    python -m bench.gpu packed --job jobs/gpu_smoke.yaml --share 0.125 [--num-cpus 1] --out DIR
    python -m bench.gpu serial --job jobs/gpu_smoke.yaml --out DIR
    python -m bench.gpu compare --out DIR
    python -m bench.gpu overrun --job jobs/gpu_smoke.yaml --share 0.125 --out DIR
    python -m bench.gpu compile --job jobs/gpu_smoke.yaml --out DIR

``packed`` and ``serial`` run the job through ``farm run`` on this machine's GPU(s), in one store:
packed (every cell's ``resources.num_gpus`` = ``--share``, the job's own ``gpu_memory_utilization``
left to the share: ``farm.cell.gpu_share``; ``--num-cpus`` each cell's CPUs, the job's unless given: on a
node of 16 CPUs the job's 2 fit 8 cells at once whatever the share), and as the job says (one whole GPU
per cell). Run ``warm`` first: every cell once, packed, probes ``load`` and ``generate`` only, in a store of
its own, so that neither run pays a node's first use of each architecture (vLLM inspects a model class once
per node and env, ~30 s, and JIT-compiles its kernels; on the H100 the machine's first packed run was 2.65×
the one-at-a-time rate, the next 4.99×, docs/gpu/packing/same-lease/). Then packed before serial: whatever
``warm`` left cold, the one-at-a-time run finds warmed, which tilts the comparison against packing, never
for it. For each: wall time of the whole ``farm run``,
cells per GPU-hour (cells ÷ wall time × GPUs), the GPUs' peak memory in use (``nvidia-smi``, every
0.5 s). ``compare`` reads both: the speed-up, and whether every cell's verdict (status and
signature) is the same in both runs.

``compile`` builds one engine of the job's first zoo model twice, with compilation on (no
``enforce_eager``), in two runs: the second finds vLLM's compile cache of the first
(``VLLM_CACHE_ROOT``, per node and env). It reports both engine builds.

``overrun`` runs four cells of the job's first model at once on one GPU: three as the share
allows, and one whose KV cache (``kv_cache_memory_bytes``) is twice its share; that one must
end ``infra_error`` (out of memory inside its share) and then pass on a whole GPU, the three
must pass untouched.

Each writes ``DIR/<name>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class GpuMemory:
    """The peak of the GPUs' used memory (MiB, summed over GPUs) while the block runs, read by nvidia-smi."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True).stdout.split()
            self.peak_mib = max(self.peak_mib, sum(int(x) for x in used if x.isdigit()))
            self._stop.wait(0.5)

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def gpu_facts() -> tuple[int, int, str]:
    """The number of GPUs, one GPU's memory in MiB and its name."""
    rows = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()
    name, total = (part.strip() for part in rows[0].split(","))
    return len(rows), int(total), name


def farm_run(job: dict[str, Any], store: Path, run_id: str, out: Path) -> dict[str, Any]:
    """`farm run` of the job into the store; its wall time, peak GPU memory and exit code."""
    path = out / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    log = out / f"{run_id}.log"
    started = time.perf_counter()
    with GpuMemory() as memory, open(log, "w") as output:
        code = subprocess.run([sys.executable, "-m", "farm", "run", str(path), "--store", str(store), "--run-id", run_id],
                              stdout=output, stderr=subprocess.STDOUT).returncode
    return {"run_id": run_id, "wall_s": round(time.perf_counter() - started, 1), "peak_gpu_mib": memory.peak_mib,
            "exit": code}


def verdicts(store: Path, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each cell's attempts (label → status, signature, origin, engine build, retry reason), oldest first."""
    from farm.store import open_store, scan_run

    scan = scan_run(open_store(str(store)), run_id, all_attempts=True)
    return {attempts[-1].cell.label: [{
        "status": a.status.value, "signature": a.error.signature if a.error else None,
        "origin": a.error.origin if a.error else None, "message": a.error.message[:300] if a.error else None,
        "engine_build_s": a.timings.get("engine_build"), "total_s": a.timings.get("total"),
        "retry_reason": a.retry_reason} for a in attempts] for attempts in scan.attempts.values()}


def packed(job: dict[str, Any], share: float, num_cpus: float | None = None) -> dict[str, Any]:
    job = copy.deepcopy(job)
    job["resources"] = {**job.get("resources", {}), "num_gpus": share,
                        **({"num_cpus": num_cpus} if num_cpus is not None else {})}
    job.get("engine_args", {}).pop("gpu_memory_utilization", None)  # the share sets it
    return job


def warm_job(job: dict[str, Any], share: float, num_cpus: float | None = None) -> dict[str, Any]:
    """The job packed as ``packed`` runs it, its cells building their engines and generating, nothing more."""
    job = packed(job, share, num_cpus)
    job.update(name=f"{job['name']}-warm", probes=["load", "generate"])
    return job


def warm_up(job: dict[str, Any], share: float, out: Path, num_cpus: float | None = None) -> dict[str, Any]:
    """Every cell once on this node (``warm_job``), in a store of its own: the packed run's store starts empty."""
    return farm_run(warm_job(job, share, num_cpus), out / "warm-store", "bench-warm", out)


def one_way(job: dict[str, Any], share: float, out: Path, way: str, num_cpus: float | None = None) -> dict[str, Any]:
    """One run of the job, packed (``--share`` of a GPU per cell) or one cell at a time (as the job says)."""
    gpus, _, name = gpu_facts()
    store = out / "store"
    run = farm_run(packed(job, share, num_cpus) if way == "packed" else job, store, f"bench-{way}", out)
    cells = verdicts(store, run["run_id"])
    cpus = num_cpus or job.get("resources", {}).get("num_cpus")
    run.update(way=way, gpu=name, gpus=gpus, share=share if way == "packed" else None,
               num_cpus=cpus if way == "packed" else None, cells=len(cells),
               attempts=sum(len(a) for a in cells.values()), cells_per_gpu_hour=round(len(cells) / (run["wall_s"] / 3600 * gpus), 1),
               verdicts=cells)
    return run


def compare(out: Path) -> dict[str, Any]:
    """The packed run against the one-at-a-time run: speed-up in cells per GPU-hour, and whether every verdict agrees."""
    runs = {way: json.loads((out / f"{way}.json").read_text()) for way in ("packed", "serial")}
    final = {way: {cell: (a[-1]["status"], a[-1]["signature"]) for cell, a in run["verdicts"].items()}
             for way, run in runs.items()}
    differ = sorted(c for c in final["packed"].keys() | final["serial"].keys()
                    if final["packed"].get(c) != final["serial"].get(c))
    return {"speedup": round(runs["packed"]["cells_per_gpu_hour"] / runs["serial"]["cells_per_gpu_hour"], 2),
            "same_verdicts": not differ, "differ": differ,
            "runs": {way: {k: v for k, v in run.items() if k != "verdicts"} for way, run in runs.items()}}


def first_model(job: dict[str, Any]) -> dict[str, Any]:
    model = copy.deepcopy(job["models"][0])
    model["variants"] = model["variants"][:1]
    model["loras"] = []
    return model


def compile_cache(job: dict[str, Any], out: Path) -> dict[str, Any]:
    job = copy.deepcopy(job)
    job.update(name="compile-cache", models=[first_model(job)], probes=["load", "generate"], exclude=[])
    job["engine_args"] = {**job.get("engine_args", {}), "enforce_eager": False}
    store = out / "store"
    runs = [farm_run(job, store, f"bench-compile-{n}", out) for n in (1, 2)]
    builds = [next(iter(verdicts(store, run["run_id"]).values()))[-1] for run in runs]
    return {"runs": runs, "first_build_s": builds[0]["engine_build_s"], "second_build_s": builds[1]["engine_build_s"],
            "statuses": [b["status"] for b in builds]}


def overrun(job: dict[str, Any], share: float, out: Path) -> dict[str, Any]:
    _, total_mib, _ = gpu_facts()
    model = first_model(job)
    base = model["variants"][0]
    greedy_bytes = int(2 * share * total_mib * 2**20)
    model["variants"] = [{**base, "quantization": f"n{i}"} for i in range(3)] + [
        {**base, "quantization": "greedy", "engine_args": {**base.get("engine_args", {}), "kv_cache_memory_bytes": greedy_bytes}}]
    job = packed(job, share)
    job.update(name="overrun", models=[model], probes=["load", "generate", "determinism"], exclude=[])
    store = out / "store"
    run = farm_run(job, store, "bench-overrun", out)
    return {"share": share, "greedy_kv_cache_bytes": greedy_bytes, "run": run, "cells": verdicts(store, run["run_id"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["warm", "packed", "serial", "compare", "overrun", "compile"])
    parser.add_argument("--job", default=str(REPO / "jobs" / "gpu_smoke.yaml"))
    parser.add_argument("--share", type=float, default=0.125)
    parser.add_argument("--num-cpus", type=float, help="`warm`, `packed`: each cell's CPUs (default: the job's)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    job = yaml.safe_load(Path(args.job).read_text())
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    found: dict[str, Any]
    if args.what == "warm":
        found = warm_up(job, args.share, out, args.num_cpus)
        print(f"warm: {found['wall_s']} s, peak {found['peak_gpu_mib']} MiB, exit {found['exit']}")
    elif args.what in ("packed", "serial"):
        found = one_way(job, args.share, out, args.what, args.num_cpus)
        print(f"{args.what}: {found['cells']} cells, {found['attempts']} attempts, {found['wall_s']} s, "
              f"{found['cells_per_gpu_hour']} cells per GPU-hour, peak {found['peak_gpu_mib']} MiB, exit {found['exit']}")
    elif args.what == "compare":
        found = compare(out)
        print("| run | cells | attempts | wall s | cells per GPU-hour | peak GPU memory MiB | exit |")
        print("|---|---|---|---|---|---|---|")
        for way, run in found["runs"].items():
            print(f"| {way} | {run['cells']} | {run['attempts']} | {run['wall_s']} | {run['cells_per_gpu_hour']} | "
                  f"{run['peak_gpu_mib']} | {run['exit']} |")
        print(f"speed-up {found['speedup']}×; same verdicts: {found['same_verdicts']} {found['differ'] or ''}")
    elif args.what == "compile":
        found = compile_cache(job, out)
        print(f"engine build with compilation: first {found['first_build_s']} s, second {found['second_build_s']} s "
              f"({found['statuses']})")
    else:
        found = overrun(job, args.share, out)
        for cell, attempts in found["cells"].items():
            print(cell, [(a["status"], a["origin"], a["retry_reason"]) for a in attempts])
    (out / f"{args.what}.json").write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
