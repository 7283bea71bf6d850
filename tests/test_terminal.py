"""What reaches a terminal or is stored carries no control sequences: user-given strings (run ids, model names)
and messages from vLLM and Ray (whose log lines are coloured)."""

from __future__ import annotations

import subprocess
import sys

from farm.model.results import ErrorInfo
from farm.store import LocalStore
from farm.text import strip_ansi, terminal_safe

from .synthetic import Shape, write_runs

# What Ray's wrapper of a dead actor looked like in a stored infra_error before (colours and all).
RAY_WRAPPER = "\x1b[36mray::CellActor.run()\x1b[39m (pid=123, ip=127.0.0.1)\n\x1b[1m\x1b[31mRayActorError\x1b[0m: died"


def test_control_sequences_are_removed_and_other_controls_shown():
    assert strip_ansi(RAY_WRAPPER) == "ray::CellActor.run() (pid=123, ip=127.0.0.1)\nRayActorError: died"
    assert strip_ansi("\x1b]0;pwned\x07title \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "title link"
    assert terminal_safe("a\x1b[2Jb\x00c\x07d\ne\tf\r") == "ab\\x00c\\x07d\ne\tf\r"
    assert terminal_safe("\x9b31mred") == "red"


def test_stored_messages_keep_no_control_sequences():
    error = ErrorInfo(type="RayActorError", message=RAY_WRAPPER, traceback_tail=RAY_WRAPPER, wrapper=RAY_WRAPPER)
    assert "\x1b" not in error.model_dump_json() and error.message.startswith("ray::CellActor.run()")


def test_the_cli_prints_hostile_names_without_control_sequences(tmp_path):
    store = LocalStore(tmp_path / "store")
    write_runs(store, Shape(rows=3, columns=2, nights=1), hostile=True)
    out = subprocess.run([sys.executable, "-m", "farm", "matrix", "--store", str(store.root)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pwned" in out.stdout and " red " in out.stdout, "the names are shown"
    assert "\x1b" not in out.stdout + out.stderr and "\x9b" not in out.stdout and "\x07" not in out.stdout


def test_a_run_id_with_control_characters_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "farm", "run", "--run-id", "evil\x1b[2J\nFAKE LINE", "job.yaml"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2 and "\x1b" not in out.stderr
    assert out.stderr.splitlines()[-1] == ("farm run: error: argument --run-id: 'evil\\x1b[2J\\nFAKE LINE' is no run id: "
                                           "give one line of printable characters (e.g. smoke-2026-12-06)")
