"""How a dead cell's process ended, read from real faulthandler output, the watchdog's line and Ray's words.

The fatal-signal and timeout texts come from real processes (faulthandler's format is
CPython's to change); the memory watchdog kills a real allocating process with a small limit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from farm.cell import watchdog
from farm.runner import outcomes
from farm.runner.outcomes import crash_error, stacks, timeout_error


def stderr_of(code: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


SEGFAULT = """
    import ctypes, faulthandler, threading, time
    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()  # another thread's stack is printed too
    faulthandler.enable(all_threads=True)
    def load_weights():
        ctypes.string_at(0)
    load_weights()
"""


def test_segfault_names_the_signal_and_the_crashing_frame():
    code, log = stderr_of(SEGFAULT)
    assert code == -11
    error = crash_error("The actor is dead because its worker process has died.", "engine log line\n" + log)
    assert (error.type, error.signal, error.exit_code) == ("SIGSEGV", "SIGSEGV", None)
    assert error.message.startswith("Segmentation fault (SIGSEGV) in the cell's process at ")
    assert "string_at" in error.message, "the innermost frame of the thread that crashed, not another thread's"
    assert error.traceback_tail.splitlines()[-2:] == [
        "  <string>:6 in load_weights", f"  {Path(__import__('ctypes').__file__)}:519 in string_at"]
    assert error.signature and len(error.signature) == 10


def test_abort_and_the_other_fatal_signals():
    code, log = stderr_of("import faulthandler, os, signal; faulthandler.enable(); os.kill(os.getpid(), signal.SIGABRT)")
    assert code == -6
    assert crash_error("", log).signal == "SIGABRT"
    for text, name in outcomes.FATAL_SIGNALS.items():
        assert crash_error("", f"Fatal Python error: {text}\n\nStack (most recent call first):\n"
                               '  File "/x/vllm/kernels.py", line 3 in run\n').signal == name


def test_a_vllm_frame_is_the_crash_frame():
    log = ('Fatal Python error: Aborted\n\nCurrent thread 0x00007f00 (most recent call first):\n'
           '  File "/site-packages/torch/ops.py", line 10 in __call__\n'
           '  File "/site-packages/vllm/model_executor/layers/fused_moe/layer.py", line 452 in forward\n'
           '  File "/site-packages/farm/cell/execute.py", line 90 in execute_cell\n')
    error = crash_error("", log)
    assert error.frame == "vllm/model_executor/layers/fused_moe/layer.py:452"
    other = crash_error("", log.replace("line 452", "line 460"))
    assert other.signature == error.signature, "the same crash groups across versions whose lines moved"


def test_timeout_says_where_the_cell_hung():
    code, log = stderr_of("""
        import faulthandler, sys, threading, time
        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
        faulthandler.dump_traceback_later(0.3, file=sys.stderr)
        def execute_cell():
            time.sleep(1)
        execute_cell()
    """)
    assert code == 0
    error = timeout_error(30, "INFO building\n" + log)
    assert error.type == "timeout" and error.signal is None
    assert error.message == "no result within 30s; the cell's actor was killed at <string>:6 in execute_cell"
    assert len(stacks(log)) == 2


def test_exit_code_memory_monitor_and_silence():
    ray_exit = ("The actor died unexpectedly before finishing this task.\n\tclass_name: CellActor\nThe actor is dead "
                "because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker exits "
                "unexpectedly. Worker exits with an exit code 7.")
    error = crash_error(ray_exit, "some log\n")
    assert (error.type, error.exit_code, error.signal) == ("exit 7", 7, None)
    assert crash_error("Task was killed due to the node running low on memory.", "", memory_monitor=True).message \
        .startswith("killed by Ray's memory monitor")
    silent = crash_error("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
                         "Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of file. "
                         "Some common causes include: (1) the process was killed by the OOM killer", "")
    assert silent.type == "died" and "without a word" in silent.message and "common causes" not in silent.message


def test_lost_nodes_are_told_apart_from_crashes():
    from ray.exceptions import ActorUnavailableError

    assert outcomes.lost_node(ActorUnavailableError("RpcError: Socket closed", None)).startswith("Ray lost contact")
    # The GCS's words for an actor whose node died (gcs_server, Ray 2.60).
    node_died = "The actor died unexpectedly before finishing this task.\nThe actor died because its node has died. Node Id: ab"
    assert outcomes.lost_node(RuntimeError(node_died)).startswith("the cell's node died: The actor died because its node")
    assert outcomes.lost_node(RuntimeError("The actor is dead because its worker process has died.")) is None


def test_watchdog_marker_is_the_one_outcomes_reads():
    assert watchdog.MEMORY_MARKER == outcomes.MEMORY_MARKER


@pytest.mark.timeout(60)
def test_watchdog_kills_a_process_tree_past_its_limit(tmp_path):
    """A process that starts the watchdog on itself (as the cell's actor does), forks a child, then allocates."""
    log = tmp_path / "cell.log"
    script = f"""
        import os, subprocess, sys, time
        watcher = subprocess.Popen([sys.executable, "-I", {str(Path(watchdog.__file__))!r}, str(os.getpid()),
                                    str(300 * 2**20), {str(log)!r}])
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(tmp_path / "child.pid")!r}, "w").write(str(child.pid))
        hoard = []
        for _ in range(100):  # 100 x 64 MiB: far past the 300 MiB limit if nothing stopped it
            hoard.append(bytearray(64 * 2**20))
            time.sleep(0.02)
        print("survived")
    """
    code, _ = stderr_of(script)
    assert code == -9
    text = log.read_text()
    assert f"{outcomes.MEMORY_MARKER} (0.29 GiB)" in text and "SIGKILL" in text
    error = crash_error("connection error code 2. End of file.", text)
    assert error.signal == "SIGKILL" and error.message.startswith("killed: exceeded the cell's memory limit (0.29 GiB)")
    child = int((tmp_path / "child.pid").read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2], \
        "the cell's child processes die with it"
