"""What a template's probes decided, kept for the next template of the same inputs.

- covers: a *plan* per key -- the names a template imported after its probes found them
  clean (in its import order) and the names it left to its task processes, with why --
  stored as one small JSON file under ``<venvs dir>/.template-plans/`` by the worker
  process (task processes cannot write there: their sandbox) and read by the next worker
  process starting a template of the same key, which then imports that list without
  probing it again (runner prewarm.py ``adopt``).
- the key is every input a probe's verdict depends on: the venv (its path, a generation
  of one dependency set, and its fingerprint's bytes), the bundle, the entrypoint module,
  the runner program (its compiled directory names the digest of its sources) and the
  template's environment, with the paths that only name one worker process's own
  directories (its compile cache, its TMPDIR) replaced by a placeholder where they are a
  whole path or its start (never inside another name). Another venv, bundle, module,
  runner or environment never reads it.
- does not: decide anything (the template still checks its own state after importing, and
  names learned later are probed as before); remove plans of venvs that were collected
  (a few hundred bytes each, never read again).
- see also: docs/modes.md "fresh-process from a template".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger("modelops_runtime.pool")

FORMAT = 1  # bump when what a plan holds or means changes
DIRECTORY = ".template-plans"
MAX_BYTES = 1 << 20  # a plan file larger than this is ignored (it was not ours)
PER_PROCESS = "<this worker process>"


def plan_key(*, venv_path: Path, fingerprint: bytes, bundle_ref: str, module: str,
             runner: str, env: Mapping[str, str], per_process: Iterable[str] = ()) -> str:
    """The key of a template's plan (see the module docstring). ``per_process``: paths of
    this worker process's own directories, replaced in ``env``'s values."""
    places = sorted({p.rstrip("/") for p in per_process if p.strip("/")}, key=len,
                    reverse=True)
    # a place counts only as a whole path (alone, or an item of a list, or after "="),
    # optionally followed by more of the path: /tmp/a is not in /tmp/ab
    own = re.compile(rf"(?<![^\s:,=])(?:{'|'.join(map(re.escape, places))})(?![^\s/:,])"
                     ) if places else None

    def same_everywhere(value: str) -> str:
        return value if own is None else own.sub(PER_PROCESS, value)

    blob = json.dumps({"format": FORMAT, "venv": str(venv_path),
                       "fingerprint": hashlib.sha256(fingerprint).hexdigest(),
                       "bundle": bundle_ref, "module": module, "runner": runner,
                       "env": sorted((k, same_everywhere(v)) for k, v in env.items())},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Plans:
    """The plans under ``root`` (``<venvs dir>/.template-plans``); thread-safe, and safe
    across the worker processes sharing ``root`` (each write is one atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def load(self, key: str) -> dict | None:
        """The plan stored for ``key``, None if there is none (or it is unreadable)."""
        path = self.root / f"{key}.json"
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError:
            return None
        try:
            plan = json.loads(data) if len(data) <= MAX_BYTES else None
        except ValueError:
            plan = None
        if not valid(plan) or plan.get("key") != key:
            return None
        return {"imports": plan["imports"], "excluded": plan["excluded"]}

    def save(self, key: str, imports: list, excluded: Mapping[str, str]) -> None:
        """Store what a template of ``key`` imported and excluded (best effort: a plan that
        cannot be written costs the next template its probes, nothing else)."""
        plan = {"key": key, "imports": [str(n) for n in imports],
                "excluded": {str(k): str(v) for k, v in excluded.items()}}
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(plan))
            os.replace(tmp, self.root / f"{key}.json")
        except OSError as exc:
            log.debug("template plan %s not stored: %s", key[:12], exc)
            with contextlib.suppress(OSError):
                tmp.unlink()


def valid(plan: object) -> bool:
    """A plan's shape: a list of module names and a dict of name → reason."""
    return (isinstance(plan, dict) and isinstance(plan.get("imports"), list)
            and all(isinstance(n, str) for n in plan["imports"])
            and isinstance(plan.get("excluded"), dict)
            and all(isinstance(k, str) and isinstance(v, str)
                    for k, v in plan["excluded"].items()))


__all__ = ["Plans", "plan_key", "valid", "DIRECTORY"]
