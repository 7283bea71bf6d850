"""What only the local directory backend has to get right: its files on disk."""

from __future__ import annotations

import os

import pytest

from farm.errors import StoreError
from farm.store import LocalStore, open_store


def test_no_temp_files_are_left_or_listed(tmp_path):
    store = LocalStore(tmp_path)
    store.put("runs/r/cells/c/attempt-1.json", b"one")
    store.put("matrix/latest.json", b"a", overwrite=True)
    (tmp_path / "runs" / "r" / "cells" / "c" / ".attempt-2.json.x.tmp").write_bytes(b"half")  # a write in progress
    assert store.list("runs/") == ["runs/r/cells/c/attempt-1.json"]
    assert [p.name for p in tmp_path.rglob(".*")] == [".attempt-2.json.x.tmp"]


def test_symlink_out_of_the_store_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "store").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "store" / "runs")
    with pytest.raises(StoreError, match="escapes the store root"):
        LocalStore(tmp_path / "store").put("runs/x.json", b"x")
    assert not list((tmp_path / "outside").iterdir())


def test_a_directory_swapped_for_a_symlink_out_of_a_store_in_use_is_refused(tmp_path):
    # A long-lived reader (farm dashboard) has used the store; then its matrix/ becomes a symlink out of it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"not the store's")
    store = LocalStore(tmp_path / "store")
    store.put("matrix/latest.json", b"{}", overwrite=True)
    assert store.get("matrix/latest.json") == b"{}" and store.list("matrix/") == ["matrix/latest.json"]
    (tmp_path / "store" / "matrix" / "latest.json").unlink()
    (tmp_path / "store" / "matrix").rmdir()
    os.symlink(outside, tmp_path / "store" / "matrix")
    for act in (lambda: store.get("matrix/secret.json"), lambda: store.put("matrix/latest.json", b"x", overwrite=True),
                lambda: store.put("matrix/new.json", b"x"), lambda: store.list("matrix/"), lambda: store.exists("matrix/secret.json")):
        with pytest.raises(StoreError, match="escapes the store root"):
            act()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"], "nothing written outside"
    # A symlink that stays inside the store is followed, as before.
    (tmp_path / "store" / "matrix").unlink()
    (tmp_path / "store" / "old").mkdir()
    os.symlink(tmp_path / "store" / "old", tmp_path / "store" / "matrix")
    store.put("matrix/latest.json", b"y", overwrite=True)
    assert store.get("matrix/latest.json") == b"y" and (tmp_path / "store" / "old" / "latest.json").read_bytes() == b"y"


def test_files_follow_the_umask(tmp_path):
    # Temp files are 0600; the store's files are created as the process's umask says (a shared store, a page).
    old = os.umask(0o027)
    try:
        LocalStore(tmp_path).put("runs/r/manifest.json", b"{}")
        LocalStore(tmp_path).put("index.html", b"<p>", overwrite=True)
    finally:
        os.umask(old)
    assert oct((tmp_path / "runs" / "r" / "manifest.json").stat().st_mode & 0o777) == "0o640"
    assert oct((tmp_path / "index.html").stat().st_mode & 0o777) == "0o640"


def test_open_store_urls(tmp_path):
    assert open_store(str(tmp_path)).url == str(tmp_path.resolve())
    assert open_store(f"file://{tmp_path}").url == str(tmp_path.resolve())
    with pytest.raises(StoreError, match="scheme 'gs' is not supported.*Available: file, s3"):
        open_store("gs://bucket/x")
    with pytest.raises(StoreError, match="--s3-endpoint applies to s3:// stores.*did you mean s3://mybucket"):
        open_store("mybucket", s3_endpoint="http://127.0.0.1:9")


def test_unwritable_store_fails_check_with_what_to_do(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the store directory .*choose another --store"):
        LocalStore(tmp_path / "file" / "store").check()


def test_a_spool_belongs_to_the_store_it_was_written_for(tmp_path):
    from farm.store import Spool

    from .test_store_contract import make_cell, make_result

    spool = Spool(tmp_path / "spool", "s3://bucket-a/farm")
    spool.add_result(make_result("r", make_cell()))
    with pytest.raises(StoreError, match="spooled for the store s3://bucket-a/farm.*--store s3://bucket-a/farm"):
        Spool(tmp_path / "spool", "s3://bucket-b/farm")
    assert [r.run_id for r in Spool(tmp_path / "spool", "s3://bucket-a/farm").results()] == ["r"]
