# Sourced by the image scripts: podman with this project's settings (containers.conf).
# shellcheck shell=bash
IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$IMAGE_DIR/containers.conf}
# The versions the base image is pinned to (also read by the tests and the README).
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
PYTHON_VERSION=${PYTHON_VERSION:-3.11.7}
