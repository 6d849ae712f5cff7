#!/usr/bin/env bash
# Makes the worker image's base locally, without any registry: Debian (debootstrap minbase
# from the apt mirror) plus CPython $PYTHON_VERSION at /usr/local, laid out like Docker Hub's
# python:<version>-slim-<suite> (python3/pip on PATH, /usr/local/lib/python3.11) so
# runtime/Dockerfile builds on it unchanged via --build-arg BASE_IMAGE=<printed tag>.
#
# CPython comes from a prefix built on Debian 12 (pyenv's $(pyenv root)/versions/<version>,
# or PYTHON_PREFIX): the same 3.11.7 the tests' and `make run`'s clients run, since Dask
# wants client and workers on one Python. python.org is not reachable from the CI machines;
# Debian 12's own python3 is 3.11.2 and Debian 13's is 3.13.
# Only the standard library is copied (no site-packages, tests, IDLE or tkinter); pip comes
# from its own ensurepip.
#
# Cached by content: the tag ends in a hash of this script, the suite, the Python version
# and the interpreter's own files; an image with that tag already present is reused (a
# rebuild with nothing changed takes a second).
#
# usage: runtime/image/make-base.sh          → prints the base image's tag on stdout
# env:   PYTHON_PREFIX  CPython $PYTHON_VERSION prefix (default: pyenv's, then python3's own)
#        DEBIAN_MIRROR  default: the host's apt mirror, else http://deb.debian.org/debian
#        PYTHON_VERSION, DEBIAN_SUITE  (defaults pinned in podman.sh)
# exit 3 + one line on stderr: this machine cannot make it (no root, no debootstrap/podman,
# no CPython prefix of the pinned version).
set -euo pipefail
# shellcheck source=podman.sh
. "$(dirname "${BASH_SOURCE[0]}")/podman.sh"
V=${PYTHON_VERSION%.*}                       # 3.11
cannot() { echo "base image: cannot make it here: $*" >&2; exit 3; }
log() { echo "base image: $*" >&2; }

(( EUID == 0 )) || cannot "debootstrap and podman import need root"
command -v debootstrap >/dev/null || cannot "debootstrap is missing (ci/install-podman.sh installs it)"
command -v podman >/dev/null || cannot "podman is missing (ci/install-podman.sh installs it)"

prefix_version() { "$1/bin/python$V" -c 'import platform; print(platform.python_version())' 2>/dev/null || true; }
if [[ -z "${PYTHON_PREFIX:-}" ]]; then
  for cand in "$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")/versions/$PYTHON_VERSION" \
              "$(python3 -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)"; do
    if [[ -n "$cand" && "$(prefix_version "$cand")" == "$PYTHON_VERSION" ]]; then PYTHON_PREFIX=$cand; break; fi
  done
fi
[[ -n "${PYTHON_PREFIX:-}" ]] || cannot "no CPython $PYTHON_VERSION prefix (pyenv install $PYTHON_VERSION, or set PYTHON_PREFIX)"
got=$(prefix_version "$PYTHON_PREFIX")
[[ "$got" == "$PYTHON_VERSION" ]] || cannot "PYTHON_PREFIX=$PYTHON_PREFIX is Python '${got:-?}', not the pinned $PYTHON_VERSION"
[[ -e "$PYTHON_PREFIX/lib/libpython$V.so.1.0" ]] || cannot "$PYTHON_PREFIX has no libpython$V.so.1.0 (build it with --enable-shared)"

key=$( { cat "${BASH_SOURCE[0]}"; echo "$DEBIAN_SUITE $PYTHON_VERSION";
         sha256sum "$PYTHON_PREFIX/bin/python$V" "$PYTHON_PREFIX/lib/libpython$V.so.1.0" | cut -d' ' -f1;
         (cd "$PYTHON_PREFIX/lib/python$V" && find . -path ./site-packages -prune -o -name '*.py' -printf '%P %s\n' | LC_ALL=C sort | sha256sum); } \
       | sha256sum | cut -c1-12)
TAG=localhost/modelops-base:python$PYTHON_VERSION-$DEBIAN_SUITE-$key
if podman image exists "$TAG"; then
  log "$TAG already made (same inputs)"
  echo "$TAG"; exit 0
fi

MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/modelops-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
# python:<v>-slim's runtime packages: ca-certificates netbase tzdata + CPython's shared libs
PKGS=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libexpat1,libuuid1,zlib1g,libgdbm6
t0=$(date +%s)
log "debootstrap $DEBIAN_SUITE from $MIRROR ..."
debootstrap --variant=minbase --include="$PKGS" "$DEBIAN_SUITE" "$ROOT" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log" >&2; echo "base image: debootstrap failed (log above)" >&2; exit 1; }
t1=$(date +%s)

mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/lib" "$ROOT/usr/local/include"
cp -a "$PYTHON_PREFIX/bin/python$V" "$ROOT/usr/local/bin/"
cp -a "$PYTHON_PREFIX"/lib/libpython$V.so* "$ROOT/usr/local/lib/"
cp -a "$PYTHON_PREFIX/include/python$V" "$ROOT/usr/local/include/"
tar -C "$PYTHON_PREFIX/lib" -c \
    --exclude="python$V/test" --exclude="python$V/idlelib" --exclude="python$V/tkinter" \
    --exclude="python$V/turtledemo" --exclude="python$V/lib2to3/tests" \
    --exclude="python$V/site-packages/*" --exclude='__pycache__' \
    --exclude="python$V/lib-dynload/_test*" --exclude="python$V/lib-dynload/_tkinter*" \
    --exclude="python$V/config-$V-*/libpython*.a" \
    "python$V" | tar -C "$ROOT/usr/local/lib" -x
ln -sf "python$V" "$ROOT/usr/local/bin/python3"; ln -sf python3 "$ROOT/usr/local/bin/python"
chroot "$ROOT" /sbin/ldconfig      # libpython from /usr/local/lib (its RUNPATH names the old prefix)
PIP_ROOT_USER_ACTION=ignore chroot "$ROOT" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
chroot "$ROOT" /usr/local/bin/python3 -m compileall -q "/usr/local/lib/python$V" >/dev/null || true
ln -sf pip3 "$ROOT/usr/local/bin/pip"
# what a slim image does not carry
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
       "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*
find "$ROOT"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
: >"$ROOT"/etc/resolv.conf; : >"$ROOT"/etc/hostname

tar --numeric-owner --xattrs -C "$ROOT" -c . | podman import \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change 'ENV LANG=C.UTF-8' --change "ENV PYTHON_VERSION=$PYTHON_VERSION" \
  --change "LABEL org.opencontainers.image.base.name=debian:$DEBIAN_SUITE" \
  --change "LABEL io.modelops.base.key=$key" --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
t2=$(date +%s)
log "made $TAG: debootstrap $((t1-t0))s, python + import $((t2-t1))s"
echo "$TAG"
