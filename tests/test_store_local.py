"""The local directory store: create-once writes, atomicity, keys that cannot escape."""

from __future__ import annotations

import pytest

from farm.errors import StoreError
from farm.store import AlreadyExists, LocalStore, open_store, result_key, safe_part


def test_create_once_and_overwrite(tmp_path):
    store = LocalStore(tmp_path)
    store.put("runs/r/cells/c/attempt-1.json", b"one")
    with pytest.raises(AlreadyExists):
        store.put("runs/r/cells/c/attempt-1.json", b"two")
    assert store.get("runs/r/cells/c/attempt-1.json") == b"one"
    store.put("matrix/latest.json", b"a", overwrite=True)
    store.put("matrix/latest.json", b"b", overwrite=True)
    assert store.get("matrix/latest.json") == b"b"
    assert store.list("runs/r/") == ["runs/r/cells/c/attempt-1.json"]
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "no temp files left behind"


def test_missing_key_names_it(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        LocalStore(tmp_path).get("runs/x/manifest.json")


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a/b", "..", "mödel ünïcode", "with space", "", "/abs"])
def test_hostile_names_stay_inside(tmp_path, hostile):
    part = safe_part(hostile)
    assert "/" not in part and part not in ("", ".", "..")
    store = LocalStore(tmp_path / "store")
    key = result_key(hostile, hostile, 1)
    store.put(key, b"x")
    assert (tmp_path / "store").resolve() in (tmp_path / "store" / key).resolve().parents


def test_raw_escaping_key_is_refused(tmp_path):
    with pytest.raises(StoreError, match="escapes the store root"):
        LocalStore(tmp_path / "s").put("../outside.json", b"x")


def test_open_store_urls(tmp_path):
    assert open_store(str(tmp_path)).url == str(tmp_path.resolve())
    assert open_store(f"file://{tmp_path}").url == str(tmp_path.resolve())
    with pytest.raises(StoreError, match="not supported"):
        open_store("gs://bucket/x")
