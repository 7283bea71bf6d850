"""The one registry behind probes, engine kinds, store backends and zoo architectures (farm.registry)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from farm.errors import FarmError, StoreError, ZooError
from farm.registry import PROBES, Registry


def test_register_get_and_names():
    things: Registry[int] = Registry("thing")
    things.register("one", 1)

    @things.register("two")
    def two() -> int:
        return 2

    assert things.get("one") == 1 and things.get("two") is two
    assert things.names() == ["one", "two"] and "one" in things and "three" not in things


def test_unknown_name_says_did_you_mean_in_the_registrys_error():
    things: Registry[int] = Registry("zoo thing", error=ZooError)
    things.register("qwen2-dense", 1)
    with pytest.raises(ZooError, match=r"unknown zoo thing 'qwen2-dens'\. Did you mean 'qwen2-dense'\? Available: qwen2-dense\."):
        things.get("qwen2-dens")


def test_a_name_is_registered_once():
    things: Registry[int] = Registry("thing")
    things.register("one", 1)
    with pytest.raises(FarmError, match="registered twice"):
        things.register("one", 2)
    things.unregister("one")
    things.register("one", 2)
    assert things.get("one") == 2


def test_lazy_entries_import_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_plugin_module.py").write_text("LOADED = True\nVALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    things: Registry[int] = Registry("thing")
    things.lazy("answer", "lazy_plugin_module:VALUE")
    assert "lazy_plugin_module" not in sys.modules
    assert things.get("answer") == 42 and "lazy_plugin_module" in sys.modules


def test_builtins_module_is_imported_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "builtin_things.py").write_text(textwrap.dedent("""
        from farm.registry import Registry
        THINGS = Registry("thing", builtins="builtin_things")
        THINGS.register("built-in", 7)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from builtin_things import THINGS  # type: ignore[import-not-found]

    assert THINGS.names() == ["built-in"]


def test_a_plugin_package_adds_entries_through_entry_points(tmp_path, monkeypatch):
    """A separately installed package declares `[project.entry-points."farm.probes"]`: the registry finds it."""
    dist = tmp_path / "farm_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: farm-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[farm.demo_things]\nfrom-a-plugin = farm_plugin_demo:THING\n")
    (tmp_path / "farm_plugin_demo.py").write_text("THING = 'a plug-in entry'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    things: Registry[str] = Registry("thing", group="farm.demo_things")
    things.register("built-in", "a built-in entry")
    assert things.names() == ["built-in", "from-a-plugin"]
    assert things.get("from-a-plugin") == "a plug-in entry"


def test_the_farms_registries_hold_their_built_ins():
    from farm.envs.registry import ENV_KINDS
    from farm.model.engines import ENGINE_SPECS
    from farm.store.base import BACKENDS
    from farm.zoo.registry import ARCHS

    assert {"load", "generate", "lora", "reference", "lora_reference", "lora_unused", "base_after_lora", "determinism",
            "perf"} <= set(PROBES.names())
    assert ENV_KINDS.names() == ENGINE_SPECS.names()  # every kind has a model and a preparation
    assert {"current", "fault-injection", "venv", "pip", "uv", "bundle", "image"} <= set(ENV_KINDS.names())
    assert {"file", "s3"} <= set(BACKENDS.names())
    assert {"qwen2-dense", "qwen2moe-shared", "mixtral", "deepseekv3"} <= set(ARCHS.names())
    with pytest.raises(StoreError, match=r"unknown store URL scheme 'fiel'\. Did you mean 'file'\?"):
        BACKENDS.get("fiel")
