"""RuntimeConfig: the runtime's whole configuration, read from MODELOPS_* variables.

Nothing else configures the runtime. Invalid values raise :class:`ConfigError` naming the
variable, the value given and what is allowed; unknown MODELOPS_* variables are reported
with the closest known name (typo guard).
"""

from __future__ import annotations

import difflib
import enum
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError

log = logging.getLogger("modelops_runtime")

PREFIX = "MODELOPS_"


class ExecutorType(str, enum.Enum):
    isolated_warm = "isolated_warm"
    direct = "direct"


class FreshProcessFrom(str, enum.Enum):
    """How MAX_PROCESS_REUSE=1 makes a fresh process per task."""

    template = "template"  # fork a template that has imported the entrypoint module
    exec = "exec"          # start a new interpreter (and import everything) per task


class LogLevel(str, enum.Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


BYTES_ALLOWED = "a positive byte count: a plain integer or a quantity such as 500M, 2Gi, 512Mi"


def parse_bytes(value: Any) -> int | None:
    """A memory quantity ('2Gi', '500M', '512Mi', '1048576') in bytes, parsed by dask's
    ``parse_bytes`` (Kubernetes and Dask units alike); None for unset. Anything that is not
    a positive whole number of bytes is refused with BYTES_ALLOWED."""
    from dask.utils import parse_bytes as dask_parse_bytes

    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise ValueError(BYTES_ALLOWED)
    try:
        result = int(dask_parse_bytes(value.strip() if isinstance(value, str) else value))
    except (ValueError, TypeError, OverflowError):
        raise ValueError(BYTES_ALLOWED) from None
    if result <= 0:
        raise ValueError(BYTES_ALLOWED)
    return result


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _absolute_paths(value: list[str]) -> list[str]:
    for item in value:
        if not item.startswith("/"):
            raise ValueError(PATHS_ALLOWED)
    return value


PATHS_ALLOWED = "a comma-separated list of absolute directory paths"
ByteCount = Annotated[int | None, BeforeValidator(parse_bytes)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
PathList = Annotated[list[str], NoDecode, BeforeValidator(_split_list),
                     AfterValidator(_absolute_paths)]

_TMP = Path(tempfile.gettempdir()) / "modelops"


class RuntimeConfig(BaseSettings):
    """Effective runtime configuration; every field is one MODELOPS_<FIELD> variable."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, case_sensitive=False, extra="ignore", frozen=True,
        use_enum_values=False,
    )

    executor_type: ExecutorType = Field(
        ExecutorType.isolated_warm, description="`isolated_warm` or `direct`")
    max_warm_processes: int = Field(
        128, ge=1, description="warm processes per Dask worker process")
    force_fresh_venv: bool = Field(
        False, description="give every task a venv no task used before (a hard-link clone "
        "of one uv build per worker process that no task runs in) and remove it after")
    validate_deps: bool = Field(
        True, description="verify a cached venv (fingerprint, every file) before reuse")
    max_process_reuse: int = Field(
        1000, ge=1, description="tasks a warm process runs before retirement (1 = fresh process per task)")
    fresh_venvs_ahead: int = Field(
        2, ge=0, description="with force_fresh_venv: venvs cloned ahead in the background per "
        "dependency set while tasks run (each still used by one task only; none while the "
        "venv cache plus one more venv would exceed MODELOPS_VENVS_MAX_BYTES; 0: clone each "
        "when its task starts)")
    fresh_process_from: FreshProcessFrom = Field(
        FreshProcessFrom.template, description="with max_process_reuse=1 or "
        "force_fresh_venv: `template` forks each task's process from a per-(bundle, venv, "
        "module) template that imports no bundle module (falling back to exec by itself "
        "where it cannot be equal); `exec` starts a new interpreter per task")
    process_ttl: float = Field(
        3600, gt=0, description="seconds a warm process lives before retirement")
    max_task_processes: int = Field(
        256, ge=1, description="processes a task may have alive at once besides its warm "
        "process (children, grandchildren, daemons); one more fails the fork (EAGAIN) and "
        "the task (ProcessLimitExceeded). Enforced by the signal guard")
    mem_limit_bytes: ByteCount = Field(
        None, description="per warm process tree (PSS, sampled every 0.1 s; a hard data cap of twice it + 256 MiB in each process catches faster spikes); exceeding it kills the process and fails the task")
    pool_memory_bytes: ByteCount = Field(
        None, description="total memory (PSS) budget of one worker process's warm pool; idle processes are evicted LRU above it")
    task_timeout: float | None = Field(
        None, gt=0, description="seconds a task may run before its process is killed (unset: no limit)")
    bundle_repo: str | None = Field(
        None, description="bundle repository: a path or an fsspec URL")
    bundle_credentials: str | None = Field(
        None, description="where the bundle repository's credentials come from, named in "
        "errors (never their values), e.g. `Secret s3-creds` (the chart renders it from "
        "bundles.credentials.secretName); unset: the environment's own variables")
    bundle_cache_dir: Path = Field(
        _TMP / "bundles", description="where fetched bundles are unpacked (one per pod)")
    venvs_dir: Path = Field(
        _TMP / "venvs", description="where cached venvs live (one per dependency set)")
    native_threads: int = Field(
        1, ge=1, description="threads native libraries may start per task (OMP, MKL, "
        "OpenBLAS, BLIS, vecLib, NumExpr, Numba): set in warm processes and direct workers")
    env_passthrough: NameList = Field(
        default_factory=list,
        description="extra environment variables passed to warm processes (comma-separated)")
    warm_writable_paths: PathList = Field(
        default_factory=list,
        description="directories warm processes may write beneath, besides their own scratch "
                    "directory and /dev (comma-separated absolute paths; Landlock sandbox)")
    allow_sdist_builds: bool = Field(
        False, description="let uv build source distributions when it builds a venv (runs "
                           "their build backends); false: wheels only (uv --no-build)")
    venvs_max_bytes: ByteCount = Field(
        None, description="size budget of the venv cache; above it, venvs no warm process "
                          "uses are removed least recently used first, and fresh venvs are "
                          "built ahead only within it (unset: no limit)")
    uv_cache_max_bytes: ByteCount = Field(
        None, description="size budget of uv's cache (UV_CACHE_DIR), counting the bytes only "
                          "the cache holds (files not hard-linked into a venv); above it after "
                          "a venv build, `uv cache prune` runs, then `uv cache clean` if still "
                          "above (venvs keep their hard-linked files; unset: no limit)")
    bundles_max_bytes: ByteCount = Field(
        None, description="size budget of the bundle cache; above it, bundles no warm "
                          "process uses are removed least recently used first (unset: no limit)")
    log_level: LogLevel = Field(LogLevel.INFO, description="runtime log level")

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("executor_type", "fresh_process_from", mode="before")
    @classmethod
    def _executor_lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("bundle_repo")
    @classmethod
    def _repo_not_blank(cls, v: str | None) -> str | None:
        return (v.strip() or None) if v is not None else None

    # -- construction -------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RuntimeConfig":
        """Read and validate the configuration; raise ConfigError on the first bad value."""
        env = dict(os.environ if environ is None else environ)
        warn_unknown(env)
        values = {k[len(PREFIX):].lower(): v for k, v in env.items()
                  if k.upper().startswith(PREFIX) and k[len(PREFIX):].lower() in cls.model_fields}
        try:
            # init kwargs only: the environment was already read above (and may be a copy)
            return cls.model_validate(values)
        except ValidationError as exc:
            raise _config_error(exc, values) from None

    @classmethod
    def env_names(cls) -> list[str]:
        return [PREFIX + name.upper() for name in cls.model_fields]

    def summary(self) -> str:
        """One line of the settings that decide behaviour (for the startup log)."""
        keys = ["executor_type", "max_warm_processes", "max_process_reuse",
                "fresh_process_from", "fresh_venvs_ahead", "process_ttl", "max_task_processes",
                "force_fresh_venv", "validate_deps", "native_threads", "mem_limit_bytes", "pool_memory_bytes",
                "task_timeout"]
        parts = []
        for key in keys:
            value = getattr(self, key)
            parts.append(f"{'executor' if key == 'executor_type' else key}="
                         f"{value.value if isinstance(value, enum.Enum) else value}")
        return " ".join(parts)

    def as_env(self) -> dict[str, str]:
        """The effective configuration as MODELOPS_* variables (for `modelops-runtime config`)."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, list):
                value = ",".join(value)
            out[PREFIX + name.upper()] = "" if value is None else str(value)
        return out



def _allowed(field: str) -> str:
    info = RuntimeConfig.model_fields[field]
    ann = info.annotation
    if field == "executor_type":
        return "one of: " + ", ".join(e.value for e in ExecutorType)
    if field == "fresh_process_from":
        return "one of: " + ", ".join(e.value for e in FreshProcessFrom)
    if field == "log_level":
        return "one of: " + ", ".join(e.value for e in LogLevel)
    if field in ("mem_limit_bytes", "pool_memory_bytes", "venvs_max_bytes",
                 "uv_cache_max_bytes", "bundles_max_bytes"):
        return BYTES_ALLOWED
    if ann is bool:
        return "true or false"
    for meta in info.metadata:
        if getattr(meta, "ge", None) is not None:
            return f"an integer >= {meta.ge}"
        if getattr(meta, "gt", None) is not None:
            return f"a number > {meta.gt} (seconds)"
    if field == "env_passthrough":
        return "a comma-separated list of environment variable names"
    if field == "warm_writable_paths":
        return PATHS_ALLOWED
    return f"a value of type {getattr(ann, '__name__', ann)}"


def _config_error(exc: ValidationError, values: Mapping[str, Any]) -> ConfigError:
    """One ConfigError naming every bad variable (one restart finds them all); its fields
    describe the first."""
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        allowed = _allowed(field) if field in RuntimeConfig.model_fields else err["msg"]
        problems.append((PREFIX + field.upper(), values.get(field, err.get("input")), allowed))
    text = "; ".join(f"{var}={given!r} is not allowed; expected {allowed}"
                     for var, given, allowed in problems)
    variable, given, allowed = problems[0]
    return ConfigError(
        f"invalid configuration: {text}. "
        f"Fix the value (chart: worker.executor.* in your values file) and restart the worker.",
        variable=variable, value=given, allowed=allowed,
    )


def warn_unknown(environ: Mapping[str, str]) -> list[str]:
    """Log a warning for every MODELOPS_* variable that is not a known setting."""
    known = RuntimeConfig.env_names()
    unknown = sorted(k for k in environ if k.upper().startswith(PREFIX) and k.upper() not in known)
    for name in unknown:
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known variables: {', '.join(known)}"
        log.warning("unknown environment variable %s is ignored%s", name, hint)
    return unknown


def env_table() -> str:
    """docs/kubernetes.md's MODELOPS_* table, generated from the fields above (kept in sync by a test)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in RuntimeConfig.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        elif isinstance(default, bool):
            default = str(default).lower()
        elif isinstance(default, Path):
            default = str(default).replace(tempfile.gettempdir(), "$TMPDIR")
        elif default is None or default == []:
            default = "unset"
        elif isinstance(default, float) and default.is_integer():
            default = int(default)
        rows.append(f"| {PREFIX}{name.upper()} | {default} | {info.description} |")
    return "\n".join(rows)
