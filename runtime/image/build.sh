#!/usr/bin/env bash
# Builds runtime/Dockerfile with podman against the locally made base (make-base.sh) and
# prints the image's tag. Layers are cached by content: a rebuild with nothing changed
# takes seconds; a change to the runtime's code alone reuses the installed dependencies.
#
# usage: runtime/image/build.sh [full|slim]     (default full)
#   tag: localhost/modelops-dask:<appVersion> (full), localhost/modelops-dask:<appVersion>-slim
# env:   BASE_IMAGE       use this base instead of making one (a CPython >= 3.11 image)
#        IMAGE_TAG        another tag
#        BUILD_CA         CA bundle for the build's pip (default: the host's bundle, which
#                         holds a TLS-intercepting proxy's CA where there is one; empty: none)
#        PIP_CONFIG_FILE  a pip.conf for the build (index credentials): a build secret
#        PIP_INDEX_URL (default https://pypi.org/simple), PIP_EXTRA_INDEX_URL,
#        EXTRA_PACKAGES   build args (of the build stage only: not in the image)
#        HTTP(S)_PROXY/NO_PROXY are passed on by podman itself (not recorded in the image).
# exit 3 + one line on stderr: this machine cannot build (see make-base.sh).
set -euo pipefail
# shellcheck source=podman.sh
. "$(dirname "${BASH_SOURCE[0]}")/podman.sh"
REPO=$(cd "$IMAGE_DIR/../.." && pwd)
FLAVOUR=${1:-full}
case "$FLAVOUR" in full|slim) ;; *) echo "image: flavour must be full or slim, not '$FLAVOUR'" >&2; exit 2 ;; esac
command -v podman >/dev/null || { echo "image: cannot build here: podman is missing (ci/install-podman.sh installs it)" >&2; exit 3; }

BASE_IMAGE=${BASE_IMAGE:-$("$IMAGE_DIR/make-base.sh")}
version=$(awk '/^appVersion:/ {gsub(/"/, "", $2); print $2}' "$REPO/chart/Chart.yaml")
suffix=$([[ $FLAVOUR == full ]] && echo "" || echo "-$FLAVOUR")
TAG=${IMAGE_TAG:-localhost/modelops-dask:$version$suffix}

# the index is always passed (PyPI by default), so its build arg is known to leave no trace
PIP_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}
args=(--layers --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "FLAVOUR=$FLAVOUR")
for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL EXTRA_PACKAGES; do
  [[ -n "${!v:-}" ]] && args+=(--build-arg "$v=${!v}")
done
CA=${BUILD_CA-/etc/ssl/certs/ca-certificates.crt}
[[ -n "$CA" && -s "$CA" ]] && args+=(--secret "id=ca,src=$CA")
[[ -n "${PIP_CONFIG_FILE:-}" && -s "$PIP_CONFIG_FILE" ]] && args+=(--secret "id=pipconf,src=$PIP_CONFIG_FILE")

start=$(date +%s)
before=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
podman build "${args[@]}" -f "$REPO/runtime/Dockerfile" -t "$TAG" "$REPO" >&2
# the image this tag held before, now untagged: removed (unless a container still uses it)
after=$(podman image inspect --format '{{.Id}}' "$TAG")
if [[ -n "$before" && "$before" != "$after" ]]; then
  podman rmi "$before" >/dev/null 2>&1 || true
fi
echo "image: built $TAG ($FLAVOUR) in $(( $(date +%s) - start ))s on $BASE_IMAGE" >&2
echo "$TAG"
