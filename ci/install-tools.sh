#!/usr/bin/env bash
# Builds the pinned chart tools into .tools/bin from the Go module proxy:
#   helm  (v3), helm4 (v4), ct (chart-testing v3).
# Versions and hashes are pinned by the Go modules in ci/tools/<tool>/ (go.mod + go.sum,
# with a `tool` directive each); a tool whose pinned version is already built is skipped.
# Usage: ci/install-tools.sh [TOOLS_DIR]   (default: .tools/bin under the repo root)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/.tools/bin}
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)  # absolute: the builds run from ci/tools/<tool>

# name | module dir | package | version variable for -X | pinned version
tools=(
  "helm|helm3|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3/internal/version.version|v3.22.0"
  "helm4|helm4|helm.sh/helm/v4/cmd/helm|helm.sh/helm/v4/internal/version.version|v4.3.1"
  "ct|ct|github.com/helm/chart-testing/v3/ct|github.com/helm/chart-testing/v3/ct/cmd.Version|v3.14.0"
)

# A stamp next to each binary records what it was built from: the pinned version and the
# hash of its go.sum. Same stamp → nothing to do.
stamp_of() { echo "$1 $(sha256sum "$root/ci/tools/$2/go.sum" | cut -c1-16)"; }

# Without Go, a tool of exactly the pinned version already on PATH is linked instead.
version_on_path() {  # name version → path of a matching binary on PATH, or nothing
  local name=$1 want=$2 cand out
  cand=$(command -v "$name" 2>/dev/null) || return 0
  case "$name" in
    ct) out=$("$cand" version 2>/dev/null | head -1) ;;
    *) out=$("$cand" version --template '{{.Version}}' 2>/dev/null) ;;
  esac
  [[ "$out" == *"$want"* ]] && echo "$cand"
}

for spec in "${tools[@]}"; do
  IFS='|' read -r name dir pkg verflag version <<<"$spec"
  want=$(stamp_of "$version" "$dir")
  if [[ -x "$bin/$name" && -f "$bin/.$name.stamp" && "$(cat "$bin/.$name.stamp")" == "$want" ]]; then
    echo "tools: $name $version already built ($bin/$name)"
    continue
  fi
  if ! command -v go >/dev/null 2>&1; then
    found=$(version_on_path "$name" "$version")
    if [[ -n "$found" ]]; then
      ln -sf "$found" "$bin/$name"; echo "$want" >"$bin/.$name.stamp"
      echo "tools: using $name $version from PATH ($found)"
      continue
    fi
    echo "tools: cannot build $name $version: Go is not installed and no $name $version is on PATH; install Go 1.22+ (https://go.dev/dl) or put $name $version on PATH, then run make again." >&2
    exit 1
  fi
  start=$(date +%s)
  ldflags="-s -w -X $verflag=$version"
  if [[ "$name" == helm ]]; then
    # Helm 3 takes the Kubernetes version it lints and renders against from ldflags, as
    # its own Makefile does: client-go v0.X.Y → Kubernetes 1.X.
    kminor=$(cd "$root/ci/tools/$dir" && go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
  fi
  echo "tools: building $name $version from the Go module proxy ..."
  (cd "$root/ci/tools/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly \
     go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$want" >"$bin/.$name.stamp"
  echo "tools: built $name $version in $(( $(date +%s) - start ))s"
done
