#!/usr/bin/env bash
# Runs a command (the pytest phase of `make test` and `make test-fast`) in a new network
# namespace that holds only the loopback interface: no route leads off this machine, so a
# test that needs the network fails at once instead of passing on a connected machine.
# What the tests start themselves on 127.0.0.1 (Dask, the control plane, podman's pod
# networks, a test's own index or server) works as before, inside the namespace.
#
# usage: ci/no-network.sh CMD [ARGS...]
#   CMD runs with TESTS_NETWORK=none (tests/harness/test_no_network.py proves it has no route).
# Needs root, util-linux `unshare` and iproute2 `ip`. Where that is missing it says so in
# one line and runs CMD with the machine's network; under CI=true that is an error (exit 1):
# CI proves on every run that no test needs the network.
# Everything that needs the network the first time (tools, wheelhouse, the image's base and
# locked wheels) is done by the Makefile targets that run before pytest.
set -euo pipefail
(( $# )) || { echo "usage: ci/no-network.sh CMD [ARGS...]" >&2; exit 2; }

why=""
if (( EUID != 0 )); then why="not root"
elif ! command -v unshare >/dev/null; then why="unshare (util-linux) is missing"
elif ! command -v ip >/dev/null; then why="ip (iproute2) is missing"
elif ! unshare --net true 2>/dev/null; then why="unshare --net is not allowed here"
fi

if [[ -z "$why" ]]; then
  echo "== tests run without network: a new network namespace with only lo (ci/no-network.sh)" >&2
  # unshare execs its command: CMD is the same process, signals (Ctrl-C) reach it as before
  exec unshare --net -- bash -c 'ip link set lo up && TESTS_NETWORK=none exec "$@"' no-network "$@"
fi
case "${CI:-}" in
  1|true|TRUE|True|yes)
    echo "== CI: cannot run the tests without network ($why); CI must prove no test needs it" >&2
    exit 1 ;;
esac
echo "== tests run WITH the network ($why): ci/no-network.sh cannot make a namespace without it" >&2
exec "$@"
