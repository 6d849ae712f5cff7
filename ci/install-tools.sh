#!/usr/bin/env bash
# Builds the pinned chart tools into .tools/bin from the Go module proxy:
#   helm  (v3), helm4 (v4), ct (chart-testing v3);
#   k8s: etcd, kube-apiserver, kube-controller-manager, kubectl (the control plane the
#   chart tests in tests/cluster/apiserver/ run against; a cold build takes tens of minutes);
#   registry (the reference OCI registry, distribution v3: the tests push the worker image
#   and the packaged chart to it and install from it);
#   keda: keda-operator, keda-adapter (KEDA's operator and metrics API server, for the
#   autoscaling tests in tests/cluster/autoscaling/).
#   weed: SeaweedFS, the S3 API server the tests keep bundles and results in
#   (tests/support/s3.py).
# Named only: `podman` installs podman, runc and debootstrap from Debian when missing
# (ci/install-podman.sh; the image tests build and run the worker image with them).
# ci/tools/<tool>/go.mod is the one place a version is pinned (go.sum holds the hashes,
# a `tool` directive names the command); a tool already built from the same pin is skipped.
# A module whose `go` line asks for a newer Go than the one installed is built with that
# release, which `go` fetches itself as the module golang.org/toolchain (GOTOOLCHAIN).
# Usage: ci/install-tools.sh [TOOLS_DIR [TOOL...]]
#   TOOLS_DIR defaults to .tools/bin under the repo root; TOOL is helm, helm4, ct (default:
#   these three), podman, etcd, kube-apiserver, kube-controller-manager, kubectl, k8s for
#   those four, registry, keda-operator, keda-adapter, keda for those two, or weed, e.g.
#   `ci/install-tools.sh .tools/bin helm` for `make run`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/.tools/bin}
shift $(( $# > 0 ? 1 : 0 ))

# name | module dir under ci/tools | package to build | version variable for -X | module
tools=(
  "helm|helm3|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3/internal/version.version|helm.sh/helm/v3"
  "helm4|helm4|helm.sh/helm/v4/cmd/helm|helm.sh/helm/v4/internal/version.version|helm.sh/helm/v4"
  "ct|ct|github.com/helm/chart-testing/v3/ct|github.com/helm/chart-testing/v3/ct/cmd.Version|github.com/helm/chart-testing/v3"
  "etcd|etcd|.|go.etcd.io/etcd/api/v3/version.GitSHA|go.etcd.io/etcd/server/v3"
  "kube-apiserver|k8s|k8s.io/kubernetes/cmd/kube-apiserver|-|k8s.io/kubernetes"
  "kube-controller-manager|k8s|k8s.io/kubernetes/cmd/kube-controller-manager|-|k8s.io/kubernetes"
  "kubectl|k8s|k8s.io/kubernetes/cmd/kubectl|-|k8s.io/kubernetes"
  "registry|registry|github.com/distribution/distribution/v3/cmd/registry|github.com/distribution/distribution/v3/version.version|github.com/distribution/distribution/v3"
  "keda-operator|keda|github.com/kedacore/keda/v2/cmd/operator|github.com/kedacore/keda/v2/version.Version|github.com/kedacore/keda/v2"
  "keda-adapter|keda|github.com/kedacore/keda/v2/cmd/adapter|github.com/kedacore/keda/v2/version.Version|github.com/kedacore/keda/v2"
  "weed|seaweedfs|github.com/seaweedfs/seaweedfs/weed|github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT|github.com/seaweedfs/seaweedfs"
)
default_tools=(helm helm4 ct)
k8s_tools=(etcd kube-apiserver kube-controller-manager kubectl)
keda_tools=(keda-operator keda-adapter)

wanted=()
want_podman=
for want in "$@"; do
  case "$want" in
    podman) want_podman=yes ;;
    k8s) wanted+=("${k8s_tools[@]}") ;;
    keda) wanted+=("${keda_tools[@]}") ;;
    *) wanted+=("$want") ;;
  esac
done
(( ${#wanted[@]} )) || [[ -n "$want_podman" ]] || wanted=("${default_tools[@]}")
selected=()
for want in "${wanted[@]}"; do
  match=
  for spec in "${tools[@]}"; do [[ "${spec%%|*}" == "$want" ]] && match=$spec; done
  if [[ -z "$match" ]]; then
    echo "tools: unknown tool '$want'; allowed: helm, helm4, ct (none: these three), podman, etcd, kube-apiserver, kube-controller-manager, kubectl, k8s (those four), registry, keda-operator, keda-adapter, keda (those two), weed." >&2
    exit 2
  fi
  selected+=("$match")
done
if [[ -n "$want_podman" ]]; then
  bash "$root/ci/install-podman.sh"
  (( ${#selected[@]} )) || exit 0
fi

mkdir -p "$bin"
bin=$(cd "$bin" && pwd)  # absolute: the builds run from ci/tools/<tool>
have_go=$(command -v go >/dev/null 2>&1 && echo yes || true)

# The Go release a module dir is built with: the installed one, or the newer release its
# go.mod's `go` line asks for (`go` fetches it once through the module proxy).
toolchain_for() {  # module dir → value for GOTOOLCHAIN
  local want have
  want=$(awk '$1 == "go" {print $2; exit}' "$root/ci/tools/$1/go.mod")
  have=$(GOTOOLCHAIN=local go env GOVERSION); have=${have#go}
  if [[ -n "$want" && "$(printf '%s\n%s\n' "$want" "$have" | sort -V | tail -1)" != "$have" ]]; then
    echo "go$want"
  else
    echo local
  fi
}

# The version go.mod pins: Go's own answer when Go is here, else the require line itself.
pinned_version() {  # module dir → version
  local gomod=$root/ci/tools/$2/go.mod
  if [[ -n "$have_go" ]]; then
    (cd "$root/ci/tools/$2" && GOTOOLCHAIN=$(toolchain_for "$2") GOFLAGS=-mod=readonly \
       go list -m -f '{{.Version}}' "$1")
  else
    awk -v m="$1" '($1 == "require" && $2 == m) {print $3; exit} ($1 == m) {print $2; exit}' "$gomod"
  fi
}

# A stamp next to each binary records what it was built from: the pinned version and the
# hash of its go.sum. Same stamp → nothing to do.
stamp_of() { echo "$1 $(sha256sum "$root/ci/tools/$2/go.sum" | cut -c1-16)"; }

# Without Go, a tool of exactly the pinned version already on PATH is linked instead.
version_on_path() {  # name version → path of a matching binary on PATH, or nothing
  local name=$1 want=$2 cand out
  cand=$(command -v "$name" 2>/dev/null) || return 0
  case "$name" in
    ct) out=$("$cand" version 2>/dev/null | head -1) || true ;;
    etcd|kube-apiserver|kube-controller-manager|registry) out=$("$cand" --version 2>/dev/null | head -1) || true ;;
    kubectl) out=$("$cand" version --client 2>/dev/null | head -1) || true ;;
    keda-*) out= ;;  # no version command that is safe to run: never taken from PATH
    weed) out=$("$cand" version 2>/dev/null | head -1) || true ;;
    *) out=$("$cand" version --template '{{.Version}}' 2>/dev/null) || true ;;
  esac
  # etcd prints its version without the v
  if [[ "$out" == *"$want"* || "$out" == *"Version: ${want#v}"* ]]; then echo "$cand"; fi  # another version: nothing
}

for spec in "${selected[@]}"; do
  IFS='|' read -r name dir pkg verflag module <<<"$spec"
  version=$(pinned_version "$module" "$dir")
  if [[ -z "$version" ]]; then
    echo "tools: ci/tools/$dir/go.mod does not require $module; add it (go get -tool $pkg@<version>)." >&2
    exit 1
  fi
  want=$(stamp_of "$version" "$dir")
  if [[ -x "$bin/$name" && -f "$bin/.$name.stamp" && "$(cat "$bin/.$name.stamp")" == "$want" ]]; then
    echo "tools: $name $version already built ($bin/$name)"
    continue
  fi
  if [[ -z "$have_go" ]]; then
    found=$(version_on_path "$name" "$version")
    if [[ -n "$found" ]]; then
      [[ "$found" -ef "$bin/$name" ]] || ln -sf "$found" "$bin/$name"
      echo "$want" >"$bin/.$name.stamp"
      echo "tools: using $name $version from PATH ($found)"
      continue
    fi
    echo "tools: cannot build $name $version: Go is not installed and no $name $version is on PATH; install Go 1.22+ (https://go.dev/dl) or put $name $version on PATH, then run make again." >&2
    exit 1
  fi
  start=$(date +%s)
  ldflags="-s -w"
  [[ "$verflag" == - ]] || ldflags+=" -X $verflag=$version"
  if [[ "$name" == helm ]]; then
    # Helm 3 takes the Kubernetes version it lints and renders against from ldflags, as
    # its own Makefile does: client-go v0.X.Y → Kubernetes 1.X.
    kminor=$(pinned_version k8s.io/client-go "$dir" | cut -d. -f2)
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kminor"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kminor"
  fi
  if [[ "$dir" == k8s ]]; then
    # What Kubernetes' hack/lib/version.sh sets. Without gitVersion the API server reports
    # v0.0.0-master+$Format:%H$ and helm refuses every chart with a kubeVersion constraint.
    kmajor=${version#v}; kmajor=${kmajor%%.*}
    kminor=$(cut -d. -f2 <<<"$version")
    for vpkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
      ldflags+=" -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=$kmajor -X $vpkg.gitMinor=$kminor -X $vpkg.gitTreeState=clean"
    done
  fi
  echo "tools: building $name $version from the Go module proxy ..."
  (cd "$root/ci/tools/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=$(toolchain_for "$dir") \
     go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$want" >"$bin/.$name.stamp"
  echo "tools: built $name $version in $(( $(date +%s) - start ))s"
done

# KEDA's CRDs (ScaledObject, ...), which the autoscaling tests apply to their API server:
# copied from the pinned module's source (config/crd/bases) next to the binaries, in
# .tools/keda-crds, whenever a KEDA tool was asked for.
for spec in "${selected[@]}"; do
  [[ "${spec%%|*}" == keda-* ]] || continue
  src=$(cd "$root/ci/tools/keda" && GOTOOLCHAIN=$(toolchain_for keda) GOFLAGS=-mod=readonly \
          go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)
  crds=$(dirname "$bin")/keda-crds
  rm -rf "$crds.tmp" && mkdir -p "$crds.tmp"
  cp "$src"/config/crd/bases/*.yaml "$crds.tmp/" && chmod 644 "$crds.tmp"/*.yaml
  rm -rf "$crds" && mv "$crds.tmp" "$crds"
  echo "tools: KEDA's CRDs in $crds"
  break
done
