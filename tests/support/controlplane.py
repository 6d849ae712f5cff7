"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager
as plain local processes on free loopback ports, with their own CA, client certificates and
service-account key (no container engine, no kubelet, no scheduler: objects are validated,
defaulted, admitted and stored, controllers reconcile Deployments into ReplicaSets and Pod
objects, and pods stay Pending).

The binaries are the ones ci/install-tools.sh builds into .tools/bin (`make tool-k8s`).
Use :class:`ControlPlane` as a context manager: everything it started is stopped and its
state directory removed when the block ends, also on an exception or Ctrl-C. Each child is
also started with PR_SET_PDEATHSIG, so even a SIGKILLed test process leaves none behind;
the state directory it could not remove is swept at the next session's start
(:func:`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from modelops_runtime.local.cluster.supervise import StartStop, terminate_groups
from support.cluster import ended_with_this_process, tail, wait_for
from support.ports import hold_ports

from support.paths import TOOLS

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
SERVICE_CIDR = "10.96.0.0/16"  # only allocated from: nothing routes to it
FRONT_PROXY_CLIENT = "front-proxy-client"  # the aggregation layer's client certificate (CN)
READY_TIMEOUT = 180  # seconds; a loaded 2-core machine needs far less, but never hangs
STOP_TIMEOUT = 120  # seconds for stop(): 15 s of grace, then SIGKILL (bounded, even under load)



def unavailable(tools: Path = TOOLS) -> str | None:
    """Why the control plane cannot run on this machine (one line), or None if it can.
    Binaries that are missing while Go is installed are not a reason: the caller fails
    and says to build them."""
    if sys.platform != "linux":
        return (f"the local Kubernetes control plane runs on Linux only (this is {sys.platform}); "
                "the chart is tested against a real API server in CI")
    missing = [b for b in BINARIES if not os.access(tools / b, os.X_OK)]
    if missing and shutil.which("go") is None:
        return (f"no Go to build {', '.join(missing)} (the API-server chart tests): "
                "install Go 1.26+ and run `make tool-k8s`")
    return None


def missing_binaries(tools: Path = TOOLS) -> list[str]:
    return [b for b in BINARIES if not os.access(tools / b, os.X_OK)]


# ---- certificates -------------------------------------------------------------------------

def make_pki(directory: Path) -> Path:
    """A throwaway CA (ECDSA P-256, valid one day), the API server's serving certificate,
    client certificates for the admin (system:masters) and the controller-manager, the
    service-account signing key, and the aggregation layer's front-proxy CA with the client
    certificate the API server presents to extension API servers (KEDA's metrics server)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    def key(name: str):
        k = ec.generate_private_key(ec.SECP256R1())
        (directory / f"{name}.key").write_bytes(k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return k

    def subject(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
        return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def authority(name: str, cn: str):
        k = key(name)
        n = subject(cn)
        cert = (x509.CertificateBuilder().subject_name(n).issuer_name(n)
                .public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
                .sign(k, hashes.SHA256()))
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return n, k

    ca_name, ca_key = authority("ca", "modelops-test-kubernetes-ca")

    def leaf(name: str, subj: x509.Name, usage, sans=None, issuer=None) -> None:
        issuer_name, issuer_key = issuer or (ca_name, ca_key)
        k = key(name)
        b = (x509.CertificateBuilder().subject_name(subj).issuer_name(issuer_name)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(issuer_key, hashes.SHA256())
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
    leaf("apiserver", subject("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH,
         [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip),
          *(x509.DNSName(d) for d in dns)])
    leaf("admin", subject("kubernetes-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    leaf("kcm", subject("system:kube-controller-manager"), ExtendedKeyUsageOID.CLIENT_AUTH)
    front_proxy = authority("front-proxy-ca", "modelops-test-front-proxy-ca")
    leaf("front-proxy-client", subject(FRONT_PROXY_CLIENT), ExtendedKeyUsageOID.CLIENT_AUTH,
         issuer=front_proxy)
    sa = key("sa")
    (directory / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return directory


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {pki / (user + ".crt")}
    client-key: {pki / (user + ".key")}
contexts:
- name: local
  context: {{cluster: local, user: {user}}}
current-context: local
""")
    path.chmod(0o600)
    return path


# ---- the processes ----------------------------------------------------------------------

@dataclass
class Running:
    """A tool of .tools/bin started in a session of its own that dies with this process
    (also support/keda.py's)."""

    name: str
    popen: subprocess.Popen
    proc: psutil.Process  # pid + start time: never confused with a later process on that pid
    log: Path

    @classmethod
    def spawn(cls, tools: Path, name: str, args: list[str], log: Path, cwd: Path,
              env: dict[str, str] | None = None) -> Running:
        with log.open("wb") as out:
            popen = subprocess.Popen([str(tools / name), *args], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True,
                                     preexec_fn=ended_with_this_process(signal.SIGKILL))
        return cls(name, popen, psutil.Process(popen.pid), log)

    def wait_ready(self, ready, what: str, on_fail, interval: float = 0.1) -> None:
        """Until ``ready()``; fails with the log's tail if the tool exits first."""
        wait_for(lambda: self.popen.poll() is not None or ready(), READY_TIMEOUT, what,
                 interval=interval, on_fail=on_fail)
        if self.popen.returncode is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode} before "
                                 f"{what} answered:\n{tail(self.log, 40)}")


@dataclass
class ControlPlane(StartStop):
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback ports. ``root`` (a new
    temporary directory by default) holds certificates, etcd's data, logs and kubeconfigs,
    and is removed by :meth:`stop`. The aggregation layer is configured as a real cluster's
    (front-proxy CA and client certificate), so an APIService can put an extension API
    server behind it."""

    tools: Path = TOOLS
    with_kcm: bool = True
    kcm_args: tuple[str, ...] = ()  # more kube-controller-manager flags (e.g. the HPA's sync)
    root: Path | None = None
    running: list[Running] = field(default_factory=list)
    api_url: str = ""
    kubeconfig: Path | None = None
    version: str = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        need = ["etcd", "kube-apiserver"] + (["kube-controller-manager"] if self.with_kcm else [])
        missing = [b for b in missing_binaries(self.tools) if b in need]
        if missing:
            raise AssertionError(f"{', '.join(missing)} not built in {self.tools}: "
                                 "run `make tool-k8s` (ci/install-tools.sh .tools/bin k8s)")
        sweep_stale()
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
            owner_file(self.root)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.root / "pki")  # ca, apiserver, admin, kcm (.crt/.key), sa.key/.pub
        held = hold_ports(4)  # until they listen (Go's listeners share a held port)
        try:
            self._start(pki, *(h.port for h in held))
        finally:
            for h in held:
                h.release()

    def _start(self, pki: Path, etcd_port: int, etcd_peer: int, api_port: int,
               kcm_port: int) -> None:
        assert self.root is not None
        self.api_url = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = write_kubeconfig(self.root / "kubeconfig", self.api_url, pki, "admin")
        kcm_kubeconfig = write_kubeconfig(self.root / "kcm.kubeconfig", self.api_url, pki, "kcm")

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd = self._spawn("etcd", [
            "--name", "local", "--data-dir", str(self.root / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"local={peer_url}",
            "--log-level", "warn", "--unsafe-no-fsync"])  # throwaway data
        self._wait(etcd, lambda: _http_ok(f"{etcd_url}/health"), "etcd /health")

        api = self._spawn("kube-apiserver", [
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--secure-port", str(api_port),
            "--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
            "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC", "--profiling=false",
            # the aggregation layer: how the API server authenticates to an extension API
            # server, and how that server recognises the API server's proxied requests
            "--requestheader-client-ca-file", str(pki / "front-proxy-ca.crt"),
            "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
            "--requestheader-username-headers", "X-Remote-User",
            "--requestheader-group-headers", "X-Remote-Group",
            "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
            "--proxy-client-cert-file", str(pki / "front-proxy-client.crt"),
            "--proxy-client-key-file", str(pki / "front-proxy-client.key")])
        admin = _admin_context(pki)
        self._wait(api, lambda: _http_ok(f"{self.api_url}/readyz", admin) == "ok",
                   "kube-apiserver /readyz")
        self.version = _http_ok(f"{self.api_url}/version", admin) or ""

        if self.with_kcm:
            kcm = self._spawn("kube-controller-manager", [
                "--kubeconfig", str(kcm_kubeconfig),
                "--authentication-kubeconfig", str(kcm_kubeconfig),
                "--authorization-kubeconfig", str(kcm_kubeconfig),
                "--authentication-skip-lookup", "--client-ca-file", str(pki / "ca.crt"),
                "--bind-address", "127.0.0.1", "--secure-port", str(kcm_port),
                "--cert-dir", str(self.root / "kcm-certs"),
                "--leader-elect=false", "--use-service-account-credentials",
                "--service-account-private-key-file", str(pki / "sa.key"),
                "--root-ca-file", str(pki / "ca.crt"),
                "--cluster-signing-cert-file", str(pki / "ca.crt"),
                "--cluster-signing-key-file", str(pki / "ca.key"),
                "--service-cluster-ip-range", SERVICE_CIDR, "--profiling=false",
                *self.kcm_args])
            insecure = ssl.create_default_context()
            insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
            # Healthy, and its serviceaccount controller works: the ServiceAccount admission
            # plugin refuses pods in a namespace until its `default` ServiceAccount exists.
            self._wait(kcm, lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure)
                       and _http_ok(f"{self.api_url}/api/v1/namespaces/default/serviceaccounts/"
                                    "default", admin),
                       "kube-controller-manager /healthz and the default ServiceAccount")

    def stop(self, grace: float = 15) -> None:
        """SIGTERM all (the newest first), SIGKILL what is left after ``grace`` s, reap,
        remove the state directory. Idempotent."""
        # unreaped: the pid is still ours
        terminate_groups([r.popen for r in reversed(self.running) if r.popen.returncode is None],
                         grace)
        self.running.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """Environment for kubectl and helm against this control plane only: its
        kubeconfig, and caches/config inside its state directory (not the user's ~)."""
        assert self.root is not None and self.kubeconfig is not None
        home = self.root / "home"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "KUBECACHEDIR": str(home / "kube-cache"),
                "HELM_CACHE_HOME": str(home / "helm-cache"),
                "HELM_CONFIG_HOME": str(home / "helm-config"),
                "HELM_DATA_HOME": str(home / "helm-data"), "HELM_DEBUG": "false"}

    def api(self, path: str, method: str = "GET", body: dict | None = None,
            timeout: float = 30) -> dict:
        """One request to the API server as the admin: the decoded JSON answer. An error
        status raises AssertionError with the server's message."""
        assert self.root is not None
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=_admin_context(self.root / "pki")) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}"
                                 ) from None

    def pids(self) -> list[psutil.Process]:
        return [r.proc for r in self.running]

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} ({r.log}) ---\n{tail(r.log, 30)}" for r in self.running)

    def _spawn(self, name: str, args: list[str]) -> Running:
        assert self.root is not None
        running = Running.spawn(self.tools, name, args, self.root / "logs" / f"{name}.log",
                                self.root)
        self.running.append(running)
        return running

    def _wait(self, r: Running, ready, what: str) -> None:
        r.wait_ready(ready, what, self.logs)


ROOT_PREFIX = "modelops-k8s-"
OWNER = "owner"  # "<pid> <start time>" of the process that made the state directory


def owner_file(root: Path) -> Path:
    """Write ``root``'s OWNER file (this process): :func:`sweep_stale` removes ``root``
    once this process is gone."""
    (root / OWNER).write_text(_identity(psutil.Process()))
    return root / OWNER


def _identity(proc: psutil.Process) -> str:
    return f"{proc.pid} {proc.create_time()}"


def sweep_stale(base: Path | None = None, prefix: str = ROOT_PREFIX) -> list[Path]:
    """Remove the state directories (CA and service-account keys, etcd data, logs) of
    control planes whose process is gone without stop() (SIGKILLed): its etcd and API
    server died with it (PDEATHSIG), nobody was left to remove the directory. Called at
    every start and at every pytest session's start. Returns what it removed. Another
    ``prefix`` sweeps other servers' directories holding the same OWNER file (the test
    registry's, support/registry.py)."""
    removed = []
    for root in Path(base or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            pid, created = (root / OWNER).read_text().split()
            alive = _identity(psutil.Process(int(pid))) == f"{pid} {created}"
        except (OSError, ValueError):
            continue  # not ours to judge: no owner file (yet), or unreadable
        except psutil.Error:
            alive = False
        if not alive:
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
    return removed


def _admin_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> str | None:
    """The body of a 200 answer, or None (refused, not yet listening, not 200)."""
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` (pid + start time) that still run (not zombies)."""
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    return alive


TRY_IT = """\
A local Kubernetes API server is running (etcd, kube-apiserver, kube-controller-manager).
In another shell:
  export KUBECONFIG={kubeconfig}
  .tools/bin/helm install sims ./chart -f my-values.yaml --set mode=prod-warm
  .tools/bin/helm upgrade sims ./chart --reuse-values --set mode=debug-isolated
  .tools/bin/helm rollback sims 1
  .tools/bin/kubectl get deployments,replicasets,pods
Objects are validated, admitted and stored, and Deployments get ReplicaSets and Pods, but
no pod ever runs (no kubelet, no scheduler): they stay Pending, so --wait, --atomic,
--rollback-on-failure and helm test time out. Ctrl-C here stops it and removes its state.
"""


def main() -> None:
    """`make apiserver`: a control plane for a shell until Ctrl-C (or SIGTERM)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt), ControlPlane() as cp:
        print(f"export KUBECONFIG={cp.kubeconfig}  # {cp.api_url}", flush=True)
        print(TRY_IT.format(kubeconfig=cp.kubeconfig), flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
