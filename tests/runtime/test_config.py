"""RuntimeConfig: the MODELOPS_* surface, its validation and the typo guard."""

from __future__ import annotations

import logging
import pickle

import pytest

from modelops_runtime.config import ExecutorType, RuntimeConfig, parse_bytes
from modelops_runtime.errors import ConfigError


def test_defaults_match_the_design_table():
    cfg = RuntimeConfig.from_env({})
    assert cfg.executor_type is ExecutorType.isolated_warm
    assert (cfg.max_warm_processes, cfg.max_process_reuse, cfg.process_ttl) == (128, 1000, 3600)
    assert (cfg.force_fresh_venv, cfg.validate_deps, cfg.mem_limit_bytes) == (False, True, None)
    assert {"MODELOPS_BUNDLE_REPO", "MODELOPS_BUNDLE_CACHE_DIR", "MODELOPS_VENVS_DIR",
            "MODELOPS_TASK_TIMEOUT", "MODELOPS_POOL_MEMORY_BYTES", "MODELOPS_ENV_PASSTHROUGH",
            "MODELOPS_LOG_LEVEL"} <= set(RuntimeConfig.env_names())


def test_values_are_read_and_typed():
    cfg = RuntimeConfig.from_env({
        "MODELOPS_EXECUTOR_TYPE": "direct", "MODELOPS_MAX_WARM_PROCESSES": "4",
        "MODELOPS_FORCE_FRESH_VENV": "true", "MODELOPS_PROCESS_TTL": "2.5",
        "MODELOPS_MEM_LIMIT_BYTES": "2Gi", "MODELOPS_POOL_MEMORY_BYTES": "500M",
        "MODELOPS_TASK_TIMEOUT": "30", "MODELOPS_ENV_PASSTHROUGH": "HOME, LANG",
        "MODELOPS_BUNDLE_REPO": "s3://bucket/bundles"})
    assert cfg.executor_type is ExecutorType.direct
    assert cfg.max_warm_processes == 4 and cfg.force_fresh_venv is True
    assert cfg.process_ttl == 2.5 and cfg.task_timeout == 30
    assert cfg.mem_limit_bytes == 2 * 2**30 and cfg.pool_memory_bytes == 500 * 10**6
    assert cfg.env_passthrough == ["HOME", "LANG"]
    assert cfg.bundle_repo == "s3://bucket/bundles"
    assert cfg.summary().startswith("executor=direct ")


@pytest.mark.parametrize("text, value", [("2Gi", 2 * 2**30), ("500M", 500 * 10**6),
                                         ("1048576", 2**20), ("512Mi", 512 * 2**20)])
def test_byte_sizes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("variable, value, allowed", [
    ("MODELOPS_EXECUTOR_TYPE", "warm", "one of: isolated_warm, direct"),
    ("MODELOPS_MAX_WARM_PROCESSES", "0", "an integer >= 1"),
    ("MODELOPS_MAX_PROCESS_REUSE", "many", "an integer >= 1"),
    ("MODELOPS_PROCESS_TTL", "-1", "a number > 0 (seconds)"),
    ("MODELOPS_TASK_TIMEOUT", "0", "a number > 0 (seconds)"),
    ("MODELOPS_FORCE_FRESH_VENV", "maybe", "true or false"),
    ("MODELOPS_MEM_LIMIT_BYTES", "2 gigs", "a positive byte count"),
    ("MODELOPS_POOL_MEMORY_BYTES", "-5", "a positive byte count"),
    ("MODELOPS_UV_CACHE_MAX_BYTES", "2 gigs", "a positive byte count"),
    ("MODELOPS_UV_CACHE_MAX_BYTES", "0", "a positive byte count"),
])
def test_invalid_values_name_variable_value_and_what_is_allowed(variable, value, allowed):
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({variable: value})
    err = info.value
    assert (err.variable, err.value) == (variable, value)
    assert err.allowed.startswith(allowed)
    msg = str(err)
    assert f"{variable}={value!r} is not allowed" in msg and allowed in msg
    assert "\n" not in msg  # one line in the worker log
    # the error keeps its fields on its way from a worker to a client
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.variable, str(again)) == (ConfigError, variable, msg)


def test_unknown_variable_warns_with_the_closest_known_name(caplog):
    with caplog.at_level(logging.WARNING, logger="modelops_runtime"):
        cfg = RuntimeConfig.from_env({"MODELOPS_EXECUTER_TYPE": "direct"})
    assert cfg.executor_type is ExecutorType.isolated_warm  # the typo is not applied
    assert ("unknown environment variable MODELOPS_EXECUTER_TYPE is ignored; did you mean "
            "MODELOPS_EXECUTOR_TYPE?") in caplog.text


def test_every_bad_variable_is_named_in_one_line():
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({"MODELOPS_EXECUTOR_TYPE": "warm", "MODELOPS_PROCESS_TTL": "-1",
                                "MODELOPS_MAX_PROCESS_REUSE": "5"})
    message = str(info.value)
    assert "\n" not in message
    assert "MODELOPS_EXECUTOR_TYPE='warm'" in message
    assert "MODELOPS_PROCESS_TTL='-1'" in message
    assert "MAX_PROCESS_REUSE" not in message
    assert info.value.variable == "MODELOPS_EXECUTOR_TYPE"


def test_names_and_levels_are_case_insensitive():
    config = RuntimeConfig.from_env({"MODELOPS_EXECUTOR_TYPE": "Direct",
                                     "MODELOPS_LOG_LEVEL": "debug"})
    assert config.executor_type is ExecutorType.direct
    assert config.log_level.value == "DEBUG"
