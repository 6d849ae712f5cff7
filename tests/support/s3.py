"""A local S3 API server for the tests' bundle repositories and results stores: SeaweedFS's
``weed server -s3`` (pinned in ci/tools/seaweedfs, built by ci/install-tools.sh).

- covers: :class:`S3Server` starts one ``weed`` process (master, volume, filer and S3 gateway
  in one) on 127.0.0.1 with held ports (support/ports.py), a data directory of its own and
  credentials of its own (an s3 config JSON: one identity with a random key pair), waits
  until a put into a bucket works, makes buckets, gives clients their environment
  (``AWS_*``), and stops it (SIGTERM, then SIGKILL) removing its data directory. The
  ``s3_server`` fixture (session scope, tests/conftest.py) is one such server.
- does not: run in a container (tests/cluster/containers/ runs the same binary in one with
  :func:`weed_args`); talk TLS (clients use ``AWS_ENDPOINT_URL=http://...``).
- see also: docs/bundles-s3.md (what the chart renders for an S3 endpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from modelops_runtime.local.cluster.supervise import StartStop
from support.cluster import tail, wait_for
from support.paths import TOOLS
from support.ports import hold_ports

WEED = TOOLS / "weed"
READY_TIMEOUT = 120   # a cold start on a loaded 2-core machine: master election, volumes
REGION = "us-east-1"
# the ports weed serves on (HTTP and gRPC of each part); Iceberg, Lance, metrics are off
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
         "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


def unavailable() -> str | None:
    """One line saying why the S3 server cannot run here, or None."""
    if not os.access(WEED, os.X_OK):
        return (f"the S3 API server is not built at {WEED}: run `make tools` "
                "(ci/install-tools.sh .tools/bin weed)")
    return None


def s3_config(access_key: str, secret_key: str) -> dict:
    """The s3 config JSON of one identity allowed everything, with this key pair."""
    return {"identities": [{
        "name": "modelops-tests",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}


def weed_args(data: Path | str, ports: dict[str, int], config: Path | str, bind: str = "127.0.0.1",
              advertise: str | None = None) -> list[str]:
    """``weed server`` arguments: one process serving S3 at ``bind``:``ports['s3.port']``,
    its parts talking to each other at ``advertise`` (default: ``bind``), everything stored
    under ``data``, nothing reported anywhere (telemetry off)."""
    sockets = Path(data)
    args = ["server", "-s3", "-filer", f"-ip={advertise or bind}", f"-ip.bind={bind}",
            f"-dir={data}",
            f"-s3.config={config}", "-master.telemetry=false", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-volume.max=100", "-master.volumeSizeLimitMB=32",
            "-volume.preStopSeconds=0", "-volume.minFreeSpace=64MiB",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            f"-s3.localSocket={sockets / 's3.sock'}"]
    args += [f"-{name}={port}" for name, port in ports.items()]
    return args


class S3Server(StartStop):
    """One ``weed server -s3`` on 127.0.0.1 until :meth:`stop`."""

    def __init__(self, root: Path | None = None) -> None:
        # short: weed's unix sockets live in it (a socket path is at most 107 bytes)
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="mo-s3-"))
        self.access_key = "MO" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.popen: subprocess.Popen | None = None
        self.endpoint = ""
        self.log = self.root / "weed.log"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        reason = unavailable()
        if reason:
            raise AssertionError(reason)
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        held = hold_ports(len(PORTS))   # Go listeners bind a held port (SO_REUSEADDR)
        try:
            ports = dict(zip(PORTS, (h.port for h in held)))
            self.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
            logs = self.root / "logs"   # glog's files (else in TMPDIR)
            logs.mkdir(exist_ok=True)
            with self.log.open("wb") as out:
                self.popen = subprocess.Popen(
                    [str(WEED), f"-logdir={logs}", *weed_args(data, ports, config)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.root, env={**os.environ, "TMPDIR": str(self.root)},
                    start_new_session=True)
            self.wait_ready(lambda: self.popen.poll() is not None,
                            on_fail=lambda: tail(self.log, 40))
        finally:
            for h in held:
                h.release()
        if self.popen.returncode is not None:
            raise AssertionError(f"weed exited with {self.popen.returncode} before serving S3 "
                                 f"at {self.endpoint}:\n{tail(self.log, 40)}")

    def stop(self, grace: float = 15) -> None:
        """SIGTERM its process group, SIGKILL after ``grace`` s, remove its directory.
        Idempotent."""
        p = self.popen
        if p is not None and p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)

    def write_config(self, mode: int = 0o600) -> Path:
        """The s3 config JSON with this server's key pair (``mode``: 0o644 for a server
        in a container, whose user is not this one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps(s3_config(self.access_key, self.secret_key)))
        config.chmod(mode)
        return config

    def wait_ready(self, exited=lambda: False, on_fail=None) -> None:
        """Bounded wait until a put into a bucket works at :attr:`endpoint` (or ``exited``)."""
        wait_for(lambda: exited() or self._writable(), READY_TIMEOUT,
                 f"the S3 API server at {self.endpoint} to take a put", interval=0.25,
                 on_fail=on_fail)

    # -- clients ------------------------------------------------------------------------
    def env(self, access_key: str | None = None, secret_key: str | None = None,
            endpoint: str | None = None) -> dict[str, str]:
        """The ``AWS_*`` variables botocore (so s3fs) reads: this server's endpoint and key
        pair (or the ones given, e.g. a wrong key)."""
        return {"AWS_ENDPOINT_URL": endpoint or self.endpoint,
                "AWS_ACCESS_KEY_ID": access_key or self.access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
                "AWS_DEFAULT_REGION": REGION}

    def client(self):
        """A botocore S3 client of this server (the tests' own bookkeeping only)."""
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5,
                                          read_timeout=30))

    def bucket(self, prefix: str = "t") -> str:
        """A new empty bucket; its name."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def _writable(self) -> bool:
        try:
            c = self.client()
            with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou,
                                     c.exceptions.BucketAlreadyExists):
                c.create_bucket(Bucket="ready")
            c.put_object(Bucket="ready", Key="probe", Body=b"ok")
            return c.get_object(Bucket="ready", Key="probe")["Body"].read() == b"ok"
        except Exception:  # not up yet: connection refused, 5xx while volumes register
            return False
