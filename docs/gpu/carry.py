"""Plan how bundles travel to the device machine: each `run` call carries at most 64 MiB, the repository included.

    python3 docs/gpu/carry.py plan BUNDLE_DIR [BUNDLE_DIR …]   # loads.json, and .carry/load-N/<release>/… per call
    python3 docs/gpu/carry.py load N                           # the same load N again, into .carry/now/

Then, per load, `run` with `carry: [".carry/load-N"]` and `bash docs/gpu/run.sh stage-tree .carry/load-N` (see
run.sh). Every load is ready before the first call: the machine goes back 30 s after a call, so nothing but the
next call should stand between two.
A load is filled first-fit, largest files first, up to what a call has left beside the repository's tracked
files; each bundle directory's name is the release it lands under on the device (/root/bundles/<release>/).
Files are hard-linked, never copied.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".carry"
PLAN = CARRY / "loads.json"
CALL_LIMIT = 64 * 2**20
MARGIN = 2**20  # the untracked files a call also sends (new jobs, notes)


def tracked_bytes() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO / os.fsdecode(n)).stat().st_size for n in names if n and (REPO / os.fsdecode(n)).is_file())


def plan(bundles: list[Path]) -> list[list[tuple[str, str, int]]]:
    room = CALL_LIMIT - tracked_bytes() - MARGIN
    files = [(b.name, str(f), f.stat().st_size) for b in bundles for f in sorted(b.iterdir())
             if f.is_file() and (".part" in f.name or f.name in ("bundle.json", "unpack.py"))]
    too_big = [f for _, f, size in files if size > room]
    if too_big:
        sys.exit(f"carry.py: {too_big[0]} is larger than a call's room ({room / 2**20:.1f} MiB): "
                 f"farm bundle split {Path(too_big[0]).parent}/bundle.json --split {room // 2**20 - 1}MiB")
    loads: list[list[tuple[str, str, int]]] = []
    for item in sorted(files, key=lambda f: -f[2]):
        fitting = next((load for load in loads if sum(s for *_, s in load) + item[2] <= room), None)
        if fitting is None:
            loads.append([item])
        else:
            fitting.append(item)
    # Bundles complete in the order named (a load goes where the earliest bundle it holds is): `run.sh warm` can
    # start on the first while the rest arrive, and a job on the first two need not wait for the third's parts.
    order = {b.name: i for i, b in enumerate(bundles)}
    loads.sort(key=lambda load: min(order[release] for release, *_ in load))
    return loads


def link(load: list[tuple[str, str, int]], into: Path) -> None:
    shutil.rmtree(into, ignore_errors=True)
    for release, path, _ in load:
        (into / release).mkdir(parents=True, exist_ok=True)
        os.link(path, into / release / Path(path).name)


def main(argv: list[str]) -> None:
    if argv[:1] == ["plan"] and len(argv) > 1:
        loads = plan([Path(a).resolve() for a in argv[1:]])
        CARRY.mkdir(exist_ok=True)
        PLAN.write_text(json.dumps(loads, indent=1) + "\n")
        for old in CARRY.glob("load-*"):
            shutil.rmtree(old)
        for i, load in enumerate(loads):
            link(load, CARRY / f"load-{i}")
            names = ", ".join(f"{release}/{Path(f).name.rsplit('.', 1)[-1]}" for release, f, _ in load)
            print(f".carry/load-{i}: {sum(s for *_, s in load) / 2**20:.1f} MiB  {names}")
    elif argv[:1] == ["load"] and len(argv) == 2:
        load = json.loads(PLAN.read_text())[int(argv[1])]
        link(load, CARRY / "now")
        print(f"{CARRY / 'now'}: load {argv[1]}, {sum(s for *_, s in load) / 2**20:.1f} MiB")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
