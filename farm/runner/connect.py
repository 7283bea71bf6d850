"""Joining Ray: a cluster (``--address``, ``RAY_ADDRESS``, ``ray job submit``) or a local Ray of the run's own.

Every cell's process gets the farm's environment through the job-wide ``runtime_env`` set here
(``FARM_HOME``, the zoo, vLLM's in-process engine core); a local Ray listens on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from typing import Any

from farm.cell.execute import engine_environment
from farm.runner import leftovers
from farm.settings import farm_home


def connect(address: str | None = None) -> Any:
    """Join the given cluster (or RAY_ADDRESS, e.g. under `ray job submit`), else start a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or _loopback_only(address):
        # Without this, a local Ray also listens on the machine's other addresses and 0.0.0.0, and
        # ray.init rewrites a 127.0.0.1 address to the machine's other address, where a Ray started on
        # loopback does not listen. Never set when joining a real cluster, whose nodes must reach each other
        # (and reach this driver, which would then say it is at 127.0.0.1).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return ray
    env_vars = {"FARM_HOME": str(farm_home()), **engine_environment()}
    if os.environ.get("FARM_ZOO_DIR"):
        env_vars["FARM_ZOO_DIR"] = os.environ["FARM_ZOO_DIR"]
    # Under `ray job submit`, Ray merges this with the job's runtime_env and refuses a variable
    # set by both (even to the same value): the job's own settings win, and they are in our env already.
    job_env = _job_runtime_env().get("env_vars") or {}
    runtime_env = {"env_vars": {k: v for k, v in env_vars.items() if k not in job_env}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        leftovers.clean_up()  # what a killed earlier driver's local Ray left (farm.runner.leftovers)
        context = ray.init(
            # "local": always a Ray of our own. Without an address, ray.init joins the newest Ray
            # already started on this machine (another user's, another test's), whose workers run other code.
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            runtime_env=runtime_env,
            # A cell's log goes to its own file (and the store), not interleaved on the terminal.
            log_to_driver=False,
        )
        session = context.address_info.get("session_dir") if hasattr(context, "address_info") else None
        if session:
            leftovers.record(str(session))
    return ray


def _loopback_only(address: str) -> bool:
    """A Ray on this machine that answers on the loopback address given but not on the machine's outward
    address, which ``ray.init`` would rewrite it to: one started with ``--node-ip-address=127.0.0.1``.

    A head started the usual way answers on both, and keeps Ray's behaviour: its other nodes must reach
    this driver at the machine's real address.
    """
    host, port = _host_port(address)
    if not _is_loopback(address) or port is None or not _accepts(host, port):
        return False  # not this machine's loopback; or nothing there, and ray.init says so in its own words
    outward = _outward_ip()
    return outward is None or not _accepts(outward, port)


def _outward_ip() -> str | None:
    """The address ``ray.init`` rewrites 127.0.0.1 to: the source of a route outwards (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 80))
            ip = str(probe.getsockname()[0])
    except OSError:  # no route outwards: nothing to rewrite to
        return None
    return None if ip.startswith("127.") else ip


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _host_port(address: str) -> tuple[str, int | None]:
    """``ray://[::1]:10001`` → ``("::1", 10001)``; ``auto`` → ``("auto", None)``."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host:  # no port at all
        return address.split("://", 1)[-1].strip("[]"), None
    return host.strip("[]"), int(port) if port.isdigit() else None


def _is_loopback(address: str) -> bool:
    """``127.0.0.1:6379``, ``localhost:6379``, ``ray://[::1]:10001``: a Ray on this machine's loopback."""
    host, _ = _host_port(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


def _job_runtime_env() -> dict[str, Any]:
    """The runtime_env of the Ray job this driver runs in (empty outside `ray job submit`)."""
    try:
        # Ray's job supervisor hands the entrypoint its job config in this variable (ray 2.x).
        return dict(json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}
