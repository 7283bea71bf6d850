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
