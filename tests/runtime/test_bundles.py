"""Bundles: deterministic packing, verified fetch, safe once-per-pod unpacking."""

from __future__ import annotations

import os
import posixpath
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from modelops_runtime.bundles import BundleStore, pack
from modelops_runtime.config import RuntimeConfig
from modelops_runtime.errors import (BundleDigestMismatch, BundleError, BundleNotFound,
                                     ConfigError, UnsafeBundle)
from support.bundles import SIM_MODEL, archive_path, store_raw_archive, write_bundle

FILES = {"model.py": SIM_MODEL, "pkg/__init__.py": "", "pkg/util.py": "X = 1\n",
         "requirements.txt": "numpy>=1.26\n"}


def _store(tmp_path: Path, repo: Path) -> BundleStore:
    return BundleStore(RuntimeConfig(bundle_repo=str(repo), bundle_cache_dir=tmp_path / "cache"))


def _cache_entries(store: BundleStore) -> list[str]:
    """What a user would find in the cache dir (locks, manifests and compiled files are
    bookkeeping)."""
    if not store.cache_dir.exists():
        return []
    return sorted(p.name for p in store.cache_dir.iterdir()
                  if p.name not in (".locks", ".manifests", ".bytecode"))


# -- packing ---------------------------------------------------------------------------


def test_same_files_give_same_digest_whatever_mtimes_order_or_owner(tmp_path):
    repo = tmp_path / "repo"
    a = write_bundle(tmp_path / "a", FILES)
    # b: the same files written in reverse order, other mtimes, owner and permissions
    b = tmp_path / "b"
    for rel in reversed(list(FILES)):
        write_bundle(b, {rel: FILES[rel]})
    for path in b.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
        if os.geteuid() == 0:
            os.chown(path, 1234, 5678)
    (b / "model.py").chmod(0o600)
    # byte-code caches are never part of a bundle
    (b / "__pycache__").mkdir()
    (b / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"junk")

    ref_a, ref_b = pack(a, str(repo)), pack(b, str(repo))
    assert ref_a == ref_b
    assert ref_a.startswith("sha256:") and len(ref_a) == 7 + 64
    assert [p.name for p in repo.iterdir()] == [f"{ref_a[7:]}.tar.gz"]

    (b / "model.py").write_text(SIM_MODEL + "\n# changed\n")
    assert pack(b, str(repo)) != ref_a


def test_pack_accepts_fsspec_urls(tmp_path):
    src = write_bundle(tmp_path / "src", FILES)
    ref = pack(src, f"file://{tmp_path / 'repo'}")
    assert pack(src, str(tmp_path / "repo")) == ref
    assert archive_path(tmp_path / "repo", ref).is_file()
    # an in-memory fsspec filesystem works as repository end to end
    mem_ref = pack(src, "memory://modelops-test-repo")
    assert mem_ref == ref
    store = BundleStore(RuntimeConfig(bundle_repo="memory://modelops-test-repo",
                                      bundle_cache_dir=tmp_path / "cache"))
    assert (store.path(ref) / "pkg" / "util.py").read_text() == "X = 1\n"


def test_pack_refuses_what_cannot_be_a_bundle(tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(BundleError, match="does not exist or is not a directory"):
        pack(tmp_path / "missing", str(repo))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="holds no files"):
        pack(tmp_path / "empty", str(repo))

    escaping = write_bundle(tmp_path / "escaping", FILES)
    (escaping / "secrets").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeBundle, match="points outside the bundle"):
        pack(escaping, str(repo))

    fifo = write_bundle(tmp_path / "fifo", FILES)
    os.mkfifo(fifo / "pipe")
    with pytest.raises(UnsafeBundle, match="only regular files, directories and symbolic links"):
        pack(fifo, str(repo))
    assert not repo.exists() or list(repo.iterdir()) == []  # nothing half-written


def test_links_inside_the_bundle_are_packed_as_their_targets(tmp_path):
    src = write_bundle(tmp_path / "src", FILES)
    (src / "alias.py").symlink_to("model.py")
    (src / "pkg2").symlink_to("pkg")
    ref = pack(src, str(tmp_path / "repo"))
    out = _store(tmp_path, tmp_path / "repo").path(ref)
    assert not any(p.is_symlink() for p in out.rglob("*")), "an unpacked bundle holds no links"
    assert (out / "alias.py").read_text() == SIM_MODEL.lstrip("\n")
    assert (out / "pkg2" / "util.py").read_text() == "X = 1\n"
    # the same as packing copies of the targets: the reference names the content
    copy = write_bundle(tmp_path / "copy", {**FILES, "alias.py": SIM_MODEL,
                                            "pkg2/__init__.py": "", "pkg2/util.py": "X = 1\n"})
    assert pack(copy, str(tmp_path / "repo")) == ref


def test_pack_refuses_dangling_and_cyclic_links(tmp_path):
    repo = tmp_path / "repo"
    dangling = write_bundle(tmp_path / "dangling", FILES)
    (dangling / "gone.py").symlink_to("nothing.py")
    with pytest.raises(UnsafeBundle, match="points to nothing") as info:
        pack(dangling, str(repo))
    assert len(str(info.value).splitlines()) == 1
    cyclic = write_bundle(tmp_path / "cyclic", FILES)
    (cyclic / "pkg" / "up").symlink_to("..")
    with pytest.raises(UnsafeBundle, match="a cycle"):
        pack(cyclic, str(repo))
    assert not repo.exists() or list(repo.iterdir()) == []


def test_unpacked_bundles_are_read_only(tmp_path):
    src = write_bundle(tmp_path / "src", FILES)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    out = _store(tmp_path, tmp_path / "repo").path(pack(src, str(tmp_path / "repo")))
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777
             for p in [out, *out.rglob("*")]}
    assert modes == {".": 0o555, "model.py": 0o444, "pkg": 0o555, "pkg/__init__.py": 0o444,
                     "pkg/util.py": 0o444, "requirements.txt": 0o444, "run.sh": 0o555}


# -- fetching and unpacking ------------------------------------------------------------


def test_fetch_verifies_and_unpacks_once(tmp_path):
    repo = tmp_path / "repo"
    ref = pack(write_bundle(tmp_path / "src", FILES), str(repo))
    store = _store(tmp_path, repo)
    first = store.path(ref)
    assert first == store.cache_dir / ref[7:]
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*")) == [
        "model.py", "pkg", "pkg/__init__.py", "pkg/util.py", "requirements.txt"]
    # once per pod: later calls (any process) use the unpacked copy, even if the repo is gone
    archive_path(repo, ref).unlink()
    assert _store(tmp_path, repo).path(ref) == first
    assert _cache_entries(store) == [ref[7:]]


def test_unknown_digest(tmp_path):
    repo = tmp_path / "repo"
    pack(write_bundle(tmp_path / "src", FILES), str(repo))
    store = _store(tmp_path, repo)
    ref = "sha256:" + "0" * 64
    with pytest.raises(BundleNotFound, match="is not in repository") as info:
        store.path(ref)
    assert "modelops-runtime bundle pack" in str(info.value)
    assert _cache_entries(store) == []


def test_malformed_reference_and_missing_repository(tmp_path):
    store = _store(tmp_path, tmp_path / "repo")
    with pytest.raises(BundleError, match="not of the form 'sha256:<64 lowercase hex>'"):
        store.path("sha256:abc")
    no_repo = BundleStore(RuntimeConfig(bundle_cache_dir=tmp_path / "cache"))
    with pytest.raises(ConfigError, match="MODELOPS_BUNDLE_REPO is not set") as info:
        no_repo.path("sha256:" + "1" * 64)
    assert info.value.variable == "MODELOPS_BUNDLE_REPO"


def test_digest_mismatch_leaves_nothing_behind(tmp_path):
    repo = tmp_path / "repo"
    ref_a = pack(write_bundle(tmp_path / "a", FILES), str(repo))
    ref_b = pack(write_bundle(tmp_path / "b", {"other.py": "Y = 2\n"}), str(repo))
    archive_path(repo, ref_a).write_bytes(archive_path(repo, ref_b).read_bytes())
    store = _store(tmp_path, repo)
    with pytest.raises(BundleDigestMismatch, match="failed verification") as info:
        store.path(ref_a)
    assert info.value.actual == ref_b
    assert _cache_entries(store) == []


def test_truncated_archive_leaves_nothing_behind(tmp_path):
    repo = tmp_path / "repo"
    ref = pack(write_bundle(tmp_path / "src", {**FILES, "data.txt": "x" * 200_000}), str(repo))
    path = archive_path(repo, ref)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    store = _store(tmp_path, repo)
    with pytest.raises(BundleError, match="truncated or corrupt"):
        store.path(ref)
    assert _cache_entries(store) == []
    # the advice in the message works: packing again repairs the repository copy
    assert pack(tmp_path / "src", str(repo)) == ref
    assert (store.path(ref) / "data.txt").stat().st_size == 200_000


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


@pytest.mark.parametrize("bad, why", [
    (_member("../evil.py"), "contains '..'"),
    (_member("pkg/../../evil.py"), "contains '..'"),
    (_member("/tmp/evil.py"), "is an absolute path"),
    (_member("dev", tarfile.CHRTYPE), "is a device or FIFO"),
    (_member("fifo", tarfile.FIFOTYPE), "is a device or FIFO"),
    (_member("link", tarfile.SYMTYPE, "../../outside"), "is a link"),
    (_member("pkg/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("hard", tarfile.LNKTYPE, "../x"), "is a link"),
    # links are refused even when they point inside: format 2 bundles hold none
    (_member("inside", tarfile.SYMTYPE, "model.py"), "is a link"),
    (_member("hard2", tarfile.LNKTYPE, "model.py"), "is a link"),
    (_member("model.py"), "appears twice"),
    (_member("./x.py"), "not a normalised relative path"),
])
def test_unsafe_entries_are_rejected(tmp_path, bad, why):
    repo = tmp_path / "repo"
    data = None if bad.type in (tarfile.CHRTYPE, tarfile.FIFOTYPE, tarfile.SYMTYPE,
                                tarfile.LNKTYPE) else b"print('pwned')\n"
    ref = store_raw_archive(repo, [(_member("model.py"), b"X = 1\n"), (bad, data)])
    store = _store(tmp_path, repo)
    with pytest.raises(UnsafeBundle, match=why) as info:
        store.path(ref)
    assert info.value.entry == bad.name
    assert "it was not unpacked" in str(info.value)
    assert _cache_entries(store) == []
    assert not (tmp_path / "evil.py").exists() and not Path("/tmp/evil.py").exists()


def _realpath_overflow_members(dest_len: int, ups: int
                               ) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The CVE-2025-4517 / gh-135034 pattern: a chain of directory symlinks whose expansion
    outgrows PATH_MAX, so os.path.realpath stops expanding and the tarfile 'data' filter
    of unpatched Pythons (3.11.7 here) sees a harmless-looking path, then a link at the end
    of the chain back up and out of the destination, a hard link through it to a file
    outside, and members written through both. ``ups``: how many levels above the
    destination the file to overwrite lies."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf("/", "PC_PATH_MAX")
    component = "d" * ((path_max - dest_len - 1) // (len(steps) + 1))
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [(_member("model.py"), b"X = 1\n")]
    path = ""
    for step in steps:
        members.append((_member(posixpath.join(path, component), tarfile.DIRTYPE), None))
        members.append((_member(posixpath.join(path, step), tarfile.SYMTYPE, component), None))
        path = posixpath.join(path, component)
    long_link = posixpath.join(*steps, "l" * 254)
    members.append((_member(long_link, tarfile.SYMTYPE, "/".join([".."] * len(steps))), None))
    members.append((_member("escape", tarfile.SYMTYPE, posixpath.join(long_link, *[".."] * ups)),
                     None))
    members.append((_member("flaglink", tarfile.LNKTYPE, "escape/flag"), None))
    members.append((_member("flaglink"), b"overwritten\n"))
    members.append((_member("escape/newfile"), b"new\n"))
    return members


def test_long_symlink_chain_cannot_write_outside_the_cache(tmp_path):
    """Attack: the realpath-overflow archive (built here) against the bundle cache."""
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    cache.mkdir()
    flag = tmp_path / "flag"
    flag.write_text("original\n")
    # the destination is <cache>/.tmp-<hex>-<pid>-<8>/tree (about this long), three levels
    # below tmp_path, where the flag is
    dest_len = len(str(cache)) + len("/.tmp-") + 64 + len("-1234567-12345678/tree")
    ref = store_raw_archive(repo, _realpath_overflow_members(dest_len, ups=3))
    before = {p for p in tmp_path.rglob("*") if "cache" not in p.parts}
    store = _store(tmp_path, repo)
    with pytest.raises(UnsafeBundle, match="is a link") as info:
        store.path(ref)
    assert len(str(info.value).splitlines()) == 1
    assert flag.read_text() == "original\n"
    assert {p for p in tmp_path.rglob("*") if "cache" not in p.parts} == before
    assert _cache_entries(store) == []
    # the store keeps serving: a good bundle unpacks next
    good = pack(write_bundle(tmp_path / "src", FILES), str(repo))
    assert (store.path(good) / "model.py").is_file()


def test_archives_of_the_old_format_are_refused(tmp_path):
    repo = tmp_path / "repo"
    ref = store_raw_archive(repo, [(_member("model.py"), b"X = 1\n")], fmt=None)
    store = _store(tmp_path, repo)
    with pytest.raises(BundleError, match="archive format 1 .* Re-pack the bundle") as info:
        store.path(ref)
    assert len(str(info.value).splitlines()) == 1
    assert _cache_entries(store) == []


_UNPACK = textwrap.dedent("""
    import logging, os, signal, sys
    from pathlib import Path
    from modelops_runtime import bundles
    from modelops_runtime.config import RuntimeConfig

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")  # to stderr

    store = bundles.BundleStore(RuntimeConfig(bundle_repo=sys.argv[1], bundle_cache_dir=sys.argv[2]))
    if sys.argv[4] == "crash":
        # die by a real SIGKILL after extracting, just before the atomic rename
        real_rename = os.rename
        def rename(src, dst):
            if Path(dst).name == sys.argv[3][7:]:
                print("extracted", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rename(src, dst)
        bundles.os.rename = rename
    print(store.path(sys.argv[3]), flush=True)
""")


def _unpack_proc(repo: Path, cache: Path, ref: str, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _UNPACK, str(repo), str(cache), ref, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_crash_mid_unpack_never_leaves_a_half_bundle(tmp_path):
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    ref = pack(write_bundle(tmp_path / "src", FILES), str(repo))
    crashed = _unpack_proc(repo, cache, ref, "crash")
    out, err = crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL, err
    assert "extracted" in out
    assert not (cache / ref[7:]).exists()  # the half-done work is not under the final name

    # the next fetch (another process) gets a complete bundle and clears the leftovers
    ok = _unpack_proc(repo, cache, ref, "normal")
    out, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    final = Path(out.strip())
    assert (final / "pkg" / "util.py").read_text() == "X = 1\n"
    assert sorted(p.name for p in cache.iterdir()
                  if p.name not in (".locks", ".manifests", ".bytecode")) == [ref[7:]]
    assert [p.name for p in (cache / ".bytecode").iterdir()] == [ref[7:]]  # no half-done one


def test_concurrent_processes_share_one_unpack(tmp_path):
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    ref = pack(write_bundle(tmp_path / "src", {**FILES, "data.txt": "y" * 500_000}), str(repo))
    procs = [_unpack_proc(repo, cache, ref, "normal") for _ in range(4)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert {o.strip() for o, _ in outs} == {str(cache / ref[7:])}
    # exactly one of them fetched and unpacked it (it says so in its log); the others
    # waited for it and used its directory
    unpacked = [e.count(f"bundle {ref} fetched, verified and unpacked") for _, e in outs]
    assert sorted(unpacked) == [0, 0, 0, 1], [e for _, e in outs]
    assert (cache / ref[7:] / "data.txt").stat().st_size == 500_000
    assert sorted(p.name for p in cache.iterdir()
                  if p.name not in (".locks", ".manifests", ".bytecode")) == [ref[7:]]
