"""Running one cell in the current process: build the engine, run the probes, describe the outcome.

This is what a cell's Ray actor calls; it works without Ray too (benchmarks, debugging).
Any exception from the engine under test becomes the cell's result, never the caller's.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import resource
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from farm.cell import gpu_share
from farm.cell.signature import error_info, farm_origin, signature_of
from farm.cell.types import Deferred, ProbeContext
from farm.errors import FarmError
from farm.model.cells import Cell
from farm.model.results import CellResult, CellStatus, EnvFacts, ErrorInfo, ProbeResult, utcnow
from farm.model.spec import Generation, JobSpec
from farm.registry import PROBES
from farm.settings import BUNDLE_STRIPPED_VARIABLE, ENV_NOTES_VARIABLE, vllm_cache_dir
from farm.text import strip_ansi, strip_rule_of

LOG_TAIL_BYTES = 16_000  # kept in the result and the store
LOG_SCAN_BYTES = 1_000_000  # searched for a subprocess's root-cause traceback


class CellSettings(BaseModel):
    """How a cell is tested: the job-level knobs, apart from the cell's identity."""

    probes: list[str]
    engine_args: dict[str, Any] = Field(default_factory=dict)
    generation: Generation = Field(default_factory=Generation)
    keep_env: list[str] = Field(default_factory=list)
    # Per attempt: the fraction of one GPU this attempt's actor holds beside other cells (farm.cell.gpu_share).
    gpu_share: float | None = None

    @classmethod
    def from_job(cls, job: JobSpec) -> CellSettings:
        return cls(probes=job.probes, engine_args=job.engine_args, generation=job.generation, keep_env=job.keep_env)


def engine_environment() -> dict[str, str]:
    """Environment for a cell's process, set before vLLM is imported there."""
    return {
        # The engine core runs in the cell's own process: exceptions keep their vLLM file:line
        # and a tiny model builds in ~2 s instead of 15-45 s with a separate core process.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        # KV cache in GiB on CPU: 1 is plenty for the probes and keeps parallel cells in memory.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # Ray already gives each cell its CPUs; vLLM's own core pinning would fight it.
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        # Compiled-kernel caches shared by all cells on a node, not in the user's home.
        "VLLM_CACHE_ROOT": str(vllm_cache_dir()),
        # Never reach for a model hub from a test farm node.
        "HF_HUB_OFFLINE": "1",
    }



def execute_cell(
    cell: Cell, settings: CellSettings, run_id: str, attempt: int = 1, log_path: Path | None = None
) -> CellResult:
    """Build the cell's engine and run its probes; every outcome is a ``CellResult``.

    ``log_path`` is where this process's output goes: when the engine failed in a
    subprocess, the root cause is read from there.
    """
    from farm.cell.engine import build_engine

    result = CellResult(
        run_id=run_id, cell_id=cell.id, cell=cell, attempt=attempt, status=CellStatus.RUNNING, started_at=utcnow()
    )
    started = time.perf_counter()
    current_probe: str | None = None
    with _peak_rss() as peak:
        try:
            deferred: list[tuple[str, Deferred]] = []
            engine_args = gpu_share.engine_args(cell, settings.engine_args, settings.gpu_share)
            with build_engine(cell, engine_args) as engine:
                result.timings["engine_build"] = round(engine.build_seconds, 3)
                context = ProbeContext(cell=cell, engine=engine, generation=settings.generation, engine_args=engine_args)
                for name in settings.probes:
                    probe = PROBES.get(name)
                    if not probe.applies(cell):
                        continue
                    current_probe = name
                    outcome = probe.run(context)
                    if isinstance(outcome, ProbeResult):
                        _record_probe(result, outcome)
                    else:
                        deferred.append((name, outcome))
                current_probe = None
            # The engine is freed: references and second engines never share memory with it.
            for name, finish in deferred:
                current_probe = name
                _record_probe(result, finish())
            failed = [p for p in result.probes if p.failed]
            result.status = CellStatus.FAIL if failed else CellStatus.PASS
            if failed:
                result.error = wrong_output(failed)
        except FarmError as exc:  # the farm could not prepare the cell (zoo, checkpoint): no verdict
            result.status = CellStatus.INFRA_ERROR
            result.error = ErrorInfo(type=type(exc).__name__, message=str(exc), probe=current_probe)
        except Exception as exc:  # the engine under test failed (its verdict), or the farm's own code did (no verdict)
            _record_exception(result, exc, current_probe, settings, log_path)
    result.peak_rss_mb = round(peak(), 1)
    result.timings["total"] = round(time.perf_counter() - started, 3)
    result.env = env_facts()
    result.finished_at = utcnow()
    return result


def _record_exception(result: CellResult, exc: Exception, probe: str | None, settings: CellSettings,
                      log_path: Path | None) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    result.error = error_info(exc, probe=probe, log=log_tail(log_path, LOG_SCAN_BYTES) if log_path else "")
    result.status = CellStatus.FAIL
    origin = farm_origin(exc) if result.error.origin == "exception" else None
    if origin is not None:  # the farm's own code raised, with no vLLM frame below it: no verdict
        result.status = CellStatus.INFRA_ERROR
        result.error.message = f"the farm's own code failed at {origin}: {result.error.message}"[:2000]
        result.error.origin = "farm"
    elif (stripped := stripped_file(str(exc))) is not None:  # the bundle removed a file vLLM needs: no verdict
        path, rule = stripped
        result.status = CellStatus.INFRA_ERROR
        result.error.message = (f"the engine's bundle stripped {path} (its rule {rule!r}), which vLLM opened; make the "
                                f"bundle again with this farm, whose rules keep it: {result.error.message}")[:2000]
        result.error.origin = "bundle"
    elif settings.gpu_share is not None and gpu_share.out_of_memory(exc):  # the share was too small: no verdict
        result.status = CellStatus.INFRA_ERROR
        result.error.message = gpu_share.overrun_message(settings.gpu_share, result.error.message)[:2000]
        result.error.origin = gpu_share.ORIGIN
    elif not result.probes and "load" in settings.probes:
        result.probes.append(ProbeResult(name="load", passed=False, detail=result.error.type))


_PATH = re.compile(r"/[^\s'\"(),;:]+")


def stripped_file(message: str) -> tuple[str, str] | None:
    """The first path in ``message`` that is missing from this cell's bundle because one of its strip rules removed
    it (relative to the bundle's site folder), with that rule; None outside a bundle env or when there is none."""
    try:
        bundle = json.loads(os.environ.get(BUNDLE_STRIPPED_VARIABLE) or "{}")
        site, rules = str(bundle.get("site") or ""), [str(r) for r in bundle.get("rules") or []]
    except (ValueError, AttributeError):
        return None
    if not site or not rules:
        return None
    root = site.rstrip("/") + "/"
    for found in _PATH.findall(message):
        if not found.startswith(root) or Path(found).exists():
            continue
        relative = found[len(root):]
        rule = strip_rule_of(relative, rules)
        if rule is not None:
            return relative, rule
    return None


def setup_failure(cell: Cell, run_id: str, attempt: int, exc: BaseException) -> CellResult:
    """A cell whose own set-up around the engine failed (its log, its watchdogs): an infra_error that names
    the exception and the farm's file:line, never a verdict. Without it the driver saw only Ray's wrapper."""
    error = error_info(exc)
    where = farm_origin(exc) or "the cell's set-up"
    error.message = f"the farm's own code failed at {where}: {error.type}: {error.message}"[:2000]
    error.origin = "farm"
    return CellResult(run_id=run_id, cell_id=cell.id, cell=cell, attempt=attempt, status=CellStatus.INFRA_ERROR,
                      error=error, env=env_facts(), started_at=utcnow(), finished_at=utcnow())


def wrong_output(failed: list[ProbeResult]) -> ErrorInfo:
    """A cell whose engine ran but answered wrongly: its signature is the set of probes it failed,
    so cells with the same wrong behaviour group together like cells with the same exception."""
    names = ",".join(p.name for p in failed)
    message = f"probes failed: {names}; {failed[0].name}: {failed[0].detail}"
    return ErrorInfo(
        type="WrongOutput",
        message=message[:2000],
        normalized_message=f"probes failed: {names}",
        signature=signature_of("WrongOutput", f"probes failed: {names}", None, None),
        probe=failed[0].name,
        origin="probe",
    )


def _record_probe(result: CellResult, outcome: ProbeResult) -> None:
    result.probes.append(outcome)
    for key, value in outcome.metrics.items():
        if key.endswith("_s") and not key.endswith("_per_s"):  # durations, not rates
            result.timings[key.removesuffix("_s")] = value


def env_facts() -> EnvFacts:
    """Versions and device as seen by this process (never copied from the job spec)."""
    facts = EnvFacts(
        **_installed(),
        python=platform.python_version(),
        python_prefix=sys.prefix,
        platform=f"{platform.system()}-{platform.machine()}",
        hostname=socket.gethostname(),
    )
    for module in ("torch", "transformers"):
        imported = sys.modules.get(module)
        if imported:
            setattr(facts, module, getattr(imported, "__version__", None))
    facts.device, facts.compute_capability = _device()
    facts.cuda = _torch_cuda()
    facts.cpu, facts.cpu_features = _cpu()
    facts.env_notes = _env_notes()
    return facts


def _env_notes() -> list[str]:
    """What the env's preparation says it substituted or added (set by ``farm.envs.release``)."""
    try:
        notes = json.loads(os.environ.get(ENV_NOTES_VARIABLE) or "[]")
    except ValueError:
        return []
    return [str(note) for note in notes] if isinstance(notes, list) else []


@functools.cache
def _installed() -> dict[str, str | None]:
    """The installed distributions' versions: read once per process (reading the metadata of every
    installed dist takes tens of milliseconds, and a process's installed packages do not change)."""
    from farm.cell import facts as installed

    dist = installed.vllm_distribution()
    return {"vllm": installed.dist_version(dist) if dist else None, "vllm_dist": dist,
            "vllm_commit": installed.vllm_commit(), "ray": installed.dist_version("ray"),
            "torch": installed.dist_version("torch"), "transformers": installed.dist_version("transformers")}


# The CPU features that select vLLM's CPU kernels (vllm/platforms/cpu.py and the MoE experts).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _cpu() -> tuple[str | None, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None, []
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[-1].split())
    return model, [feature for feature in CPU_FEATURES if feature in flags]


def _torch_cuda() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(getattr(torch, "version", None), "cuda", None) if torch else None


def _device() -> tuple[str, str | None]:
    """The device's name and, for a GPU, its compute capability ("9.0")."""
    # Only a torch the engine imported: importing it here would cost seconds in a cell whose
    # engine never did (the fault-injection test seam), and such an engine used no GPU.
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:
        pass
    return f"cpu ({os.cpu_count()} cores)", None


@contextmanager
def _peak_rss(interval_s: float = 0.1) -> Iterator[Any]:
    """Peak resident memory (MiB) of this process and its children while the block runs."""
    import psutil

    process = psutil.Process()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                total = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, name="farm-peak-rss", daemon=True)
    sampler.start()
    try:
        yield lambda: max(peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    finally:
        stop.set()
        sampler.join()


@contextmanager
def capture_output(log_path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (C level included) to ``log_path`` for the block.

    File descriptors, not sys.stdout: vLLM's C++ kernels and a dying process write there.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(log_path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - limit))
            return strip_ansi(log.read().decode(errors="replace"))  # vLLM's and Ray's coloured lines
    except OSError:
        return ""
