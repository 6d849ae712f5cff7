#!/usr/bin/env bash
# Installs what the image tests need from Debian when it is missing: podman (builds the
# image and plays the rendered pods), runc (crun refuses hybrid cgroups), debootstrap (the
# locally made base image), and podman's networking/init helpers.
# Usage: ci/install-podman.sh        (root + apt on Debian; a no-op when all are present)
# Prints one line saying why when it cannot install (not root, no apt-get).
set -euo pipefail

# command → Debian package
need=(
  "podman|podman"
  "runc|runc"
  "debootstrap|debootstrap"
  "catatonit|catatonit"
  "slirp4netns|slirp4netns"
  "fuse-overlayfs|fuse-overlayfs"
  "newuidmap|uidmap"
  "iptables|iptables"
)
missing=()
for spec in "${need[@]}"; do
  cmd=${spec%%|*} pkg=${spec#*|}
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd || -x /usr/libexec/podman/$cmd ]] || missing+=("$pkg")
done
# podman's CNI bridge/portmap plugins (no command on PATH)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)

if (( ${#missing[@]} == 0 )); then
  echo "tools: podman $(podman version --format '{{.Client.Version}}' 2>/dev/null) and runc, debootstrap already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tools: cannot install ${missing[*]}: no apt-get here (not Debian); install podman, runc and debootstrap with your package manager." >&2
  exit 1
fi
if (( EUID != 0 )); then
  echo "tools: cannot install ${missing[*]}: apt-get needs root; run 'sudo apt-get install ${missing[*]}'." >&2
  exit 1
fi
start=$(date +%s)
echo "tools: installing ${missing[*]} from Debian ..."
export DEBIAN_FRONTEND=noninteractive
# another apt on this machine may hold the lock: wait for it (bounded) instead of failing
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
echo "tools: installed ${missing[*]} in $(( $(date +%s) - start ))s"
