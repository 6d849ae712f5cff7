"""A real OCI registry for tests: the reference registry (distribution v3, `registry` in
.tools/bin, built by ci/install-tools.sh) on a loopback port, over plain HTTP, with its own
storage directory and a config file written here.

- covers: :class:`Registry` (a context manager) starts it and stops it, removing its storage,
  config and logs (also on an exception; a SIGKILLed session's registry dies with it and
  its directory is swept at the next start); the settings that make podman and helm use plain
  HTTP for this one address only, scoped to the caller's environment (a registries.conf
  of its own named by ``CONTAINERS_REGISTRIES_CONF``, helm's ``--plain-http`` and its
  registry config in the state directory), never the machine's; a manifest's digest as the
  registry answers it; the requests it served (its access log).
- does not: serve TLS or authentication (loopback only); build or push anything itself.
- see also: tests/cluster/containers/test_image_registry.py (the image by digest),
  tests/cluster/apiserver/test_oci_chart.py and tests/chart/test_chart_oci.py (the chart).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from modelops_runtime.local.cluster.supervise import StartStop, terminate_groups
from support.cluster import ended_with_this_process, tail, wait_for
from support.controlplane import owner_file, sweep_stale
from support.paths import TOOLS
from support.ports import HeldPort

BINARY = TOOLS / "registry"
READY_TIMEOUT = 60  # seconds; it answers in well under one on a loaded machine
STOP_TIMEOUT = 15
ROOT_PREFIX = "modelops-registry-"
# What a manifest HEAD accepts: every form podman and helm push.
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])

CONFIG = """\
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""



def unavailable() -> str | None:
    """Why the registry cannot run here (one line), or None. A missing binary with Go
    installed is not a reason: :meth:`Registry.start` then fails saying how to build it."""
    if not os.access(BINARY, os.X_OK) and shutil.which("go") is None:
        return ("no Go to build the OCI registry (distribution v3) for the registry tests: "
                "install Go 1.26+ and run `ci/install-tools.sh .tools/bin registry`")
    return None


@dataclass
class Registry(StartStop):
    """The registry on ``127.0.0.1:<port>``; ``root`` (a new temporary directory) holds
    its config, storage, log and the clients' settings, and is removed by :meth:`stop`."""

    root: Path | None = None
    port: int = 0
    popen: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: what image references and ``oci://`` URLs start with."""
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        assert self.root is not None
        return self.root / "registry.log"

    def start(self) -> None:
        if not os.access(BINARY, os.X_OK):
            raise AssertionError(f"the OCI registry is not built at {BINARY}: run "
                                 "`ci/install-tools.sh .tools/bin registry` (make pytest does)")
        sweep_stale(prefix=ROOT_PREFIX)
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        owner_file(self.root)  # a SIGKILLed session's directory: swept at the next start
        (self.root / "data").mkdir()
        with HeldPort() as held:  # Go's listener shares the held port; released once up
            self.port = held.port
            config = self.root / "config.yml"
            config.write_text(CONFIG.format(data=self.root / "data", port=self.port))
            self._write_client_settings()
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            env["OTEL_TRACES_EXPORTER"] = "none"  # no exporter dialing localhost:4318
            with self.log.open("wb") as out:
                self.popen = subprocess.Popen(
                    [str(BINARY), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=self.root, env=env,
                    start_new_session=True, preexec_fn=ended_with_this_process(signal.SIGKILL))
            wait_for(lambda: self.popen.poll() is not None or self._answers(), READY_TIMEOUT,
                     f"the registry at http://{self.host}/v2/", interval=0.1,
                     on_fail=lambda: tail(self.log, 30))
            if self.popen.returncode is not None:
                raise AssertionError(f"the registry exited with {self.popen.returncode} before "
                                     f"answering:\n{tail(self.log, 30)}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period, reap, remove the state. Idempotent."""
        if self.popen is not None and self.popen.returncode is None:
            terminate_groups([self.popen], STOP_TIMEOUT)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- clients ----------------------------------------------------------------------
    def _write_client_settings(self) -> None:
        assert self.root is not None
        (self.root / "registries.conf").write_text(
            f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n')
        for d in ("helm-cache", "helm-config", "helm-data"):
            (self.root / "home" / d).mkdir(parents=True)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with podman's registries.conf
        naming this registry as plain HTTP, and helm's registry config, cache and data in
        the registry's state directory (nothing read from or written to the user's ~)."""
        assert self.root is not None
        home = self.root / "home"
        env = dict(os.environ if base is None else base)
        env.update({"CONTAINERS_REGISTRIES_CONF": str(self.root / "registries.conf"),
                    "HELM_REGISTRY_CONFIG": str(home / "helm-config" / "registry.json")})
        for var, d in (("HELM_CACHE_HOME", "helm-cache"), ("HELM_CONFIG_HOME", "helm-config"),
                       ("HELM_DATA_HOME", "helm-data")):
            env.setdefault(var, str(home / d))
        return env

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=3) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry gives ``repository:reference`` (a tag or a digest), or
        None when it has no such manifest."""
        req = urllib.request.Request(f"http://{self.host}/v2/{repository}/manifests/{reference}",
                                     method="HEAD", headers={"Accept": MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.headers["Docker-Content-Digest"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def requests(self, method: str = "", path_pattern: str = "") -> list[str]:
        """Access-log lines (``"GET /v2/... HTTP/1.1" 200``) of the requests served, those
        whose method and path match when given (``path_pattern`` is a regex)."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        found = []
        for line in lines:
            m = re.search(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d+)', line)
            if m and (not method or m.group(1) == method) and re.search(path_pattern, m.group(2)):
                found.append(f"{m.group(1)} {m.group(2)} {m.group(3)}")
        return found

    def logs(self, n: int = 40) -> str:
        return f"--- registry {self.host} ({self.log}) ---\n{tail(self.log, n)}"
