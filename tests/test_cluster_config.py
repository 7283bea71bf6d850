"""cluster.yaml validates against the JSON schema that the installed ray package ships."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from .conftest import REPO


def test_cluster_yaml_matches_rays_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)


def test_cluster_has_a_cpu_head_and_h100_workers():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "p5" not in head["node_config"]["InstanceType"]
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t["node_config"]["InstanceType"] == "p5.48xlarge" and t["resources"]["GPU"] == 8 for t in workers)
    assert any("FARM_HOME=/opt/farm" in command for command in config["worker_start_ray_commands"])


def test_schema_rejects_a_broken_config():
    """The check has teeth: a misspelt key fails validation."""
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["max_wrokers"] = 3
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as error:
        assert "max_wrokers" in str(error)
    else:
        raise AssertionError("a misspelt top-level key validated")
