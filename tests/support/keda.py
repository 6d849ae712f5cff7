"""KEDA against the test control plane: its CRDs, and its operator and metrics API server
as local processes, wired as KEDA's own chart wires them in a cluster.

- covers: :func:`crd_files` (KEDA's CRDs, copied from the pinned module by `make
  tool-keda`), :func:`unavailable`, and :class:`Keda`, a context manager that applies the
  CRDs, makes the operator ↔ metrics-server gRPC certificates, starts `keda-operator` and
  `keda-adapter` (both .tools/bin, ci/tools/keda) on held loopback ports, and registers the
  metrics server behind the API server's aggregation layer (APIService
  v1beta1.external.metrics.k8s.io). Everything it started is stopped on exit.
- the aggregation route: an APIService names a Service; a Service of type ExternalName
  `localhost` makes the API server dial 127.0.0.1:<the APIService's port> (its cluster-IP
  resolver), with no Endpoints (which refuse loopback addresses) and no kube-proxy. TLS is
  verified: the APIService's caBundle is the gRPC CA, whose server certificate names
  `keda-metrics-apiserver.keda.svc` as the aggregator expects.
- does not: run KEDA's admission webhooks (not needed: they only validate), or give the
  two processes KEDA's RBAC (they use the admin's client certificate).
- see also: docs/autoscaling.md (what the tests prove), support/controlplane.py.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from modelops_runtime.local.cluster.supervise import StartStop, terminate_groups
from support.cluster import tail, wait_for
from support.controlplane import ControlPlane, Running, still_running
from support.paths import TOOLS
from support.ports import hold_ports

BINARIES = ("keda-operator", "keda-adapter")
CRDS = TOOLS.parent / "keda-crds"
NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
APISERVICE = "v1beta1.external.metrics.k8s.io"
READY_TIMEOUT = 180


def crd_files(crds: Path = CRDS) -> list[Path]:
    """KEDA's CRD manifests (`make tool-keda` copies them from the pinned module)."""
    files = sorted(crds.glob("*.yaml"))
    if not files:
        raise AssertionError(f"KEDA's CRDs are not in {crds}: run `make tool-keda` "
                             "(ci/install-tools.sh .tools/bin keda)")
    return files


def missing(tools: Path = TOOLS) -> list[str]:
    return [b for b in BINARIES if not os.access(tools / b, os.X_OK)]


def apply_crds(plane: ControlPlane) -> None:
    """Create KEDA's CRDs (server-side apply: ScaledJob's schema is larger than the
    client-side last-applied annotation allows) and wait until they are established."""
    for f in crd_files():
        subprocess.run([str(plane.tools / "kubectl"), "apply", "--server-side",
                        "--force-conflicts", "-f", str(f)], env=plane.env(), check=True,
                       capture_output=True, timeout=120)
    subprocess.run([str(plane.tools / "kubectl"), "wait", "--for=condition=Established",
                    "--timeout=120s", *(f"crd/{_crd_name(f)}" for f in crd_files())],
                   env=plane.env(), check=True, capture_output=True, timeout=150)


def _crd_name(path: Path) -> str:
    group, plural = path.stem.split("_", 1)   # keda.sh_scaledobjects.yaml
    return f"{plural}.{group}"


def make_certs(directory: Path) -> Path:
    """ca.crt, tls.crt and tls.key as KEDA's cert rotation would write them: one CA, one
    certificate for serving and for client auth (the operator's gRPC server requires the
    metrics server's client certificate), naming 127.0.0.1 and the metrics server's
    Service as the aggregator dials it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelops-test-keda-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [f"{METRICS_SERVICE}.{NAMESPACE}.svc", f"keda-operator.{NAMESPACE}.svc", "localhost"]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keda")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 *(x509.DNSName(n) for n in names)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "tls.crt").write_bytes(cert.public_bytes(pem))
    (directory / "tls.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "tls.key").chmod(0o600)
    return directory


@dataclass
class Keda(StartStop):
    """KEDA's operator and metrics API server for ``plane`` (state under its root)."""

    plane: ControlPlane
    tools: Path = TOOLS
    running: list[Running] = field(default_factory=list)
    root: Path | None = None

    def start(self) -> None:
        gone = missing(self.tools)
        if gone:
            raise AssertionError(f"{', '.join(gone)} not built in {self.tools}: run "
                                 "`make tool-keda` (ci/install-tools.sh .tools/bin keda)")
        assert self.plane.root is not None and self.plane.kubeconfig is not None
        self.root = self.plane.root / "keda"
        certs = make_certs(self.root / "certs")
        apply_crds(self.plane)
        self.plane.api("/api/v1/namespaces", "POST", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig),
               "WATCH_NAMESPACE": "", "POD_NAMESPACE": NAMESPACE,
               "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE, "OPERATOR_NAME": "keda-operator"}
        held = hold_ports(5)
        grpc, probe, metrics, secure, adapter_metrics = (h.port for h in held)
        try:
            operator = self._spawn("keda-operator", [
                "--leader-elect=false", "--enable-cert-rotation=false",
                f"--cert-dir={certs}", f"--metrics-service-bind-address=127.0.0.1:{grpc}",
                f"--health-probe-bind-address=127.0.0.1:{probe}",
                f"--metrics-bind-address=127.0.0.1:{metrics}",
                "--zap-log-level=info", "--zap-encoder=console"], env)
            self._wait(operator, lambda: _listening(operator.proc, grpc),
                       "keda-operator's gRPC metrics service")
            adapter = self._spawn("keda-adapter", [
                f"--secure-port={secure}", "--bind-address=127.0.0.1",
                f"--cert-dir={certs}", f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--lister-kubeconfig={self.plane.kubeconfig}",
                f"--authentication-kubeconfig={self.plane.kubeconfig}",
                f"--authorization-kubeconfig={self.plane.kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{grpc}", f"--port={adapter_metrics}"],
                env)
            self._wait(adapter, lambda: _listening(adapter.proc, secure),
                       "keda-adapter's secure port")
        finally:
            for h in held:
                h.release()
        self.plane.api(f"/api/v1/namespaces/{NAMESPACE}/services", "POST", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "localhost"}})
        ca = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        self.plane.api("/apis/apiregistration.k8s.io/v1/apiservices", "POST", {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                     "service": {"name": METRICS_SERVICE, "namespace": NAMESPACE,
                                 "port": secure},
                     "caBundle": ca, "groupPriorityMinimum": 100, "versionPriority": 100}})
        wait_for(self._available, READY_TIMEOUT,
                 f"APIService {APISERVICE} to be Available through the aggregation layer",
                 interval=0.5, on_fail=self.logs)

    def check_alive(self) -> None:
        """Raise if the operator or the metrics server has exited."""
        for r in self.running:
            if r.popen.poll() is not None:
                raise AssertionError(f"{r.name} exited with {r.popen.returncode}:\n"
                                     f"{tail(r.log, 40)}")

    def _available(self) -> bool:
        self.check_alive()
        status = self.plane.api(f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}")
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in status.get("status", {}).get("conditions", []))

    def stop(self, grace: float = 15) -> None:
        """SIGTERM both, SIGKILL their groups after ``grace`` s, reap. Idempotent."""
        terminate_groups([r.popen for r in reversed(self.running) if r.popen.returncode is None],
                         grace)
        self.running.clear()

    def pids(self) -> list[psutil.Process]:
        return still_running([r.proc for r in self.running])

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} ({r.log}) ---\n{tail(r.log, 30)}" for r in self.running)

    def log_text(self, name: str) -> str:
        for r in self.running:
            if r.name == name:
                return r.log.read_text(errors="replace")
        return ""

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Running:
        assert self.root is not None
        started = Running.spawn(self.tools, name, args, self.root / f"{name}.log", self.root,
                                env)
        self.running.append(started)
        return started

    def _wait(self, r: Running, ready, what: str) -> None:
        r.wait_ready(ready, what, self.logs, interval=0.2)


def _listening(proc: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in proc.net_connections("tcp"))
    return False
