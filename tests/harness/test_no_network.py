"""The tripwire of the network-free run: `make test` runs pytest in a network namespace with
only the loopback interface (ci/no-network.sh, which sets TESTS_NETWORK=none), and this
proves that namespace really has no way off the machine — so every other test that passes
in it needs no network.

- covers: no route to any public IPv4 or IPv6 address (a UDP ``connect`` asks the kernel for
  a route and sends nothing, so the proof never sends traffic anywhere, whatever the
  namespace), no interface but ``lo`` and the virtual ones tests made inside the namespace
  (podman's bridge and veths), ``lo`` up, and name resolution of an index failing.
- covers too: the script's one line where it cannot make a namespace, fatal under CI=true.
- does not: run when pytest was started without ci/no-network.sh (it skips with one line,
  which fails under CI=true: CI must prove it).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess

import pytest

from support.paths import REPO

# documentation addresses (RFC 5737, RFC 3849) and a well-known public one: with no route,
# the kernel refuses each before any packet exists
PUBLIC = [(socket.AF_INET, "192.0.2.1"), (socket.AF_INET, "8.8.8.8"),
          (socket.AF_INET6, "2001:db8::1"), (socket.AF_INET6, "2001:4860:4860::8888")]


SCRIPT = REPO / "ci" / "no-network.sh"


@pytest.fixture
def in_the_namespace():
    if os.environ.get("TESTS_NETWORK") != "none":
        pytest.skip("pytest was not started by ci/no-network.sh (`make test` and `make "
                    "test-fast` do that): the run may use the network")


@pytest.mark.usefixtures("in_the_namespace")
@pytest.mark.parametrize(("family", "address"), PUBLIC, ids=[a for _, a in PUBLIC])
def test_no_route_to_a_public_address(family, address):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        with pytest.raises(OSError) as caught:
            sock.connect((address, 443))  # UDP: a route lookup, no packet
    assert caught.value.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL), caught.value


@pytest.mark.usefixtures("in_the_namespace")
def test_only_the_loopback_interface_and_it_is_up():
    # the container tests' podman makes its bridge and veth pairs inside this namespace;
    # anything else (a device, a tunnel, a macvlan) could lead off the machine
    links = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True,
                                      text=True, check=True, timeout=30).stdout)
    kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in links}
    assert kinds.pop("lo", "missing") is None, kinds
    assert all(kind in ("bridge", "veth") for kind in kinds.values()), kinds
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.settimeout(5)
        client.connect(server.getsockname())  # the tests' own servers work


@pytest.mark.usefixtures("in_the_namespace")
def test_an_index_name_does_not_resolve():
    # only after the route tests above: with no route, the resolver cannot ask anyone
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("pypi.org", 443, type=socket.SOCK_STREAM)


@pytest.mark.parametrize("ci", ["true", ""])
def test_where_no_namespace_can_be_made_it_says_so_and_ci_fails(tmp_path, ci):
    """Not root (here: nobody, through setpriv): one line saying why; CI=true stops there
    (exit 1, the command never runs), elsewhere the command runs with the network."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to run the script as another user")
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          "bash", str(SCRIPT), "echo", "ran"], capture_output=True, text=True,
                         env={**os.environ, "CI": ci}, cwd=tmp_path, timeout=60)
    if ci:
        assert (out.returncode, out.stdout) == (1, ""), out
        assert out.stderr == ("== CI: cannot run the tests without network (not root); CI must "
                              "prove no test needs it\n"), out.stderr
    else:
        assert (out.returncode, out.stdout) == (0, "ran\n"), out
        assert "WITH the network (not root)" in out.stderr and out.stderr.count("\n") == 1
