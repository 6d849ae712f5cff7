"""`modelops-runtime config`: print the effective configuration read from the environment.

The quickest check of a pod's env: `kubectl exec POD -- modelops-runtime config`.
"""

from __future__ import annotations

import sys

from ..config import RuntimeConfig
from ..errors import ConfigError
from ..worker.hooks import logs


def register(sub) -> None:
    p = sub.add_parser(
        "config", help="print the effective MODELOPS_* configuration (or the error)",
        description="Read MODELOPS_* from the environment exactly as a worker does and print "
                    "the effective value of every setting, or the configuration error.")
    p.set_defaults(func=run)


def run(args) -> int:
    logs.configure("WARNING")  # unknown-variable warnings go to stderr
    try:
        config = RuntimeConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, value in config.as_env().items():
        print(f"{name}={value}")
    return 0
