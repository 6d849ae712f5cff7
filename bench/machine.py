"""The machine a benchmark ran on: ratios are only comparable with it written next to them."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def uv_version() -> str:
    from uv import find_uv_bin

    out = subprocess.run([find_uv_bin(), "--version"], capture_output=True, text=True)
    return out.stdout.strip().removeprefix("uv ") or "?"


def describe() -> dict[str, str]:
    logical = psutil.cpu_count() or os.cpu_count() or 0
    physical = psutil.cpu_count(logical=False) or logical
    return {
        "cpu": cpu_model(),
        "cores": f"{logical} logical ({physical} physical)",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "dask": version("dask"),
        "distributed": version("distributed"),
        "uv": uv_version(),
        "pip": version("pip"),
        "modelops-runtime": version("modelops-runtime"),
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
