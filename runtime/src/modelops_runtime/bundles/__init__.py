"""Bundles: pack a model directory into a content-addressed archive, fetch, verify, unpack.

A bundle's reference is ``sha256:<hex>`` of its *canonical tar stream*: a PAX global header
naming the archive format (:data:`FORMAT_VERSION`), then entries sorted by path,
owner/group/mtimes zeroed, modes normalised to 0644/0755, regular files and directories
only (links inside the bundle are packed as what they point to; links leaving it are
refused). The repository stores that stream gzip-compressed as ``<hex>.tar.gz``; hashing
the uncompressed stream keeps the digest independent of the compressor's version. Workers
unpack each bundle once per pod (``bundle_cache_dir/<hex>``) under a cross-process file
lock, into a private temporary directory that is made read-only and renamed into place
only when complete. The unpacker refuses every link and special member whatever the
Python version (it never relies on tarfile's extraction filters).

Modules: deps (declared dependencies and reply types), pack, store (fetch/verify/unpack),
bytecode (the bundle's Python files compiled once per pod, beside it), readonly (read-only
trees and their removal).
"""

import os  # noqa: F401 - tests patch bundles.os.rename to crash an unpack mid-way

from .bytecode import bytecode_dir
from .deps import read_dependencies, read_reply_types
from .pack import ARCHIVE_SUFFIX, FORMAT_KEY, FORMAT_VERSION, pack, write_canonical_tar
from .readonly import make_read_only, remove_tree
from .store import BundleStore

__all__ = ["ARCHIVE_SUFFIX", "FORMAT_KEY", "FORMAT_VERSION", "BundleStore", "bytecode_dir",
           "make_read_only",
           "pack", "read_dependencies", "read_reply_types", "remove_tree",
           "write_canonical_tar"]
