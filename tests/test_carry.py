"""docs/gpu/carry.py: how bundle parts travel to the device machine, at most 64 MiB a call with the repository.
The plan must fit every call, send every part once, and complete the bundles in the order named (a job on the first
can start while the rest arrive)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from .conftest import REPO

spec = importlib.util.spec_from_file_location("carry", REPO / "docs" / "gpu" / "carry.py")
assert spec is not None and spec.loader is not None
carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry)


def room() -> int:
    return carry.CALL_LIMIT - carry.tracked_bytes() - carry.MARGIN


def fake_bundle(root: Path, release: str, part_sizes: list[int]) -> Path:
    # Sparse files: the plan reads sizes only, and the test writes no hundreds of MiB.
    folder = root / release
    folder.mkdir()
    (folder / "bundle.json").write_text("{}")
    (folder / "unpack.py").write_text("")
    (folder / "build.log").write_text("not sent")
    for i, size in enumerate(part_sizes):
        with open(folder / f"vllm-{release}.tar.xz.part{i:03d}", "wb") as part:
            part.truncate(size)
    return folder


def test_a_plan_fits_every_call_sends_every_part_once_and_completes_bundles_in_order(tmp_path):
    limit = room()
    full = limit - 2**16
    first = fake_bundle(tmp_path, "0.20.0", [full, full, full // 2])
    second = fake_bundle(tmp_path, "0.22.1", [full, full // 3])
    loads = carry.plan([first, second])

    assert all(sum(size for *_, size in load) <= limit for load in loads)
    sent = sorted(path for load in loads for _, path, _ in load)
    expected = sorted(str(f) for b in (first, second) for f in b.iterdir() if f.name != "build.log")
    assert sent == expected
    # The small remainders share a call instead of taking one each.
    assert len(loads) == 4
    holds_first = [i for i, load in enumerate(loads) if any(release == "0.20.0" for release, *_ in load)]
    assert holds_first == list(range(len(holds_first))), f"0.20.0 must be complete first: {loads}"


def test_a_part_larger_than_a_call_names_the_split_to_make(tmp_path):
    bundle = fake_bundle(tmp_path, "0.24.0", [room() + 1])
    with pytest.raises(SystemExit) as stop:
        carry.plan([bundle])
    assert f"farm bundle split {bundle}/bundle.json --split" in str(stop.value)


def test_a_load_is_hard_linked_under_its_release(tmp_path):
    bundle = fake_bundle(tmp_path, "0.26.0", [1000])
    [load] = carry.plan([bundle])
    carry.link(load, tmp_path / "load-0")
    part = tmp_path / "load-0" / "0.26.0" / "vllm-0.26.0.tar.xz.part000"
    assert os.path.samefile(part, bundle / "vllm-0.26.0.tar.xz.part000")
    assert sorted(p.name for p in (tmp_path / "load-0" / "0.26.0").iterdir()) == [
        "bundle.json", "unpack.py", "vllm-0.26.0.tar.xz.part000"]
