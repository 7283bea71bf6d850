"""The local Ray the farm starts listens on 127.0.0.1 only."""

from __future__ import annotations

import ipaddress

import psutil


def test_local_ray_listens_on_loopback_only():
    import ray

    from farm.runner.driver import connect

    connect()
    try:
        ray_processes = psutil.Process().children(recursive=True)
        listening = []
        for process in ray_processes:
            try:
                listening += [c.laddr for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
            except psutil.Error:
                continue
        assert listening, "the local Ray has listening sockets"
        for address in listening:
            host = address.ip.removeprefix("::ffff:")
            assert ipaddress.ip_address(host).is_loopback, f"Ray listens on {address.ip}:{address.port}"
    finally:
        ray.shutdown()
