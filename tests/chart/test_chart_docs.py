"""The README's values table, values.yaml's comments and the schema say the same thing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import yaml

import chartkit

_SPEC = importlib.util.spec_from_file_location(
    "values_table", chartkit.REPO / "ci" / "values_table.py")
values_table = importlib.util.module_from_spec(_SPEC)
sys.modules["values_table"] = values_table  # dataclasses look their module up
_SPEC.loader.exec_module(values_table)

VALUES_TEXT = (chartkit.CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((chartkit.CHART / "values.schema.json").read_text())
DOCS = values_table.documented_keys(VALUES_TEXT)


def test_readme_values_table_is_in_sync_with_values_yaml():
    readme = (chartkit.REPO / "README.md").read_text()
    assert readme == values_table.readme_with_table(readme), (
        "README.md's values table is out of date: run `python ci/values_table.py --write`")


def test_check_mode_of_the_generator_agrees():
    proc = subprocess.run([sys.executable, str(chartkit.REPO / "ci" / "values_table.py"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_value_is_documented():
    """Each leaf is documented itself or through a documented parent block."""
    for leaf in values_table.leaf_paths(VALUES):
        parts = leaf.split(".")
        owners = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert owners & set(DOCS), f"{leaf} has no `# --` comment in values.yaml"


def test_every_documented_key_is_in_the_schema():
    for key in DOCS:
        values_table.schema_node(SCHEMA, key)  # KeyError names the missing key


def _schema_keys(node: dict, prefix: str = ""):
    node = values_table._resolve(SCHEMA, node)
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path
        yield from _schema_keys(child, path + ".")


def _legacy_keys() -> set[str]:
    """dask/helm-chart keys the schema admits only for the render to refuse them."""
    return {key for key in _schema_keys(SCHEMA)
            if values_table.schema_node(SCHEMA, key).get("$ref") == "#/definitions/legacy"}


def test_legacy_keys_are_admitted_only_to_be_refused():
    legacy = _legacy_keys()
    assert {"workers", "worker.env", "worker.mounts", "worker.threads_per_worker",
            "worker.maxProcessReuse", "scheduler.env"} <= legacy
    tpl = (chartkit.CHART / "templates" / "_validate.tpl").read_text()
    for key in legacy:
        assert f'"{key.rsplit(".", 1)[-1]}" "' in tpl, f"_validate.tpl does not refuse {key}"
        assert key not in DOCS


def test_every_schema_key_has_a_default_in_values_yaml():
    """The schema types no key values.yaml lacks (except those only users add)."""
    only_in_schema = {"global", "worker.resources.requests", "worker.resources.limits",
                      "worker.resources.requests.memory", "worker.resources.requests.cpu",
                      "worker.resources.limits.memory", "worker.resources.limits.cpu",
                      "scheduler.resources.requests", "scheduler.resources.limits",
                      "worker.strategy.rollingUpdate", "worker.strategy.rollingUpdate.maxSurge",
                      "worker.strategy.rollingUpdate.maxUnavailable"}
    for component in ("worker", "scheduler"):
        for probe in ("readinessProbe", "livenessProbe"):
            for field in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds",
                          "failureThreshold", "successThreshold", "terminationGracePeriodSeconds"):
                only_in_schema.add(f"{component}.{probe}.{field}")
    only_in_schema |= _legacy_keys()
    for key in _schema_keys(SCHEMA):
        if key in only_in_schema:
            continue
        try:
            values_table.lookup(VALUES, key)
        except (KeyError, TypeError):
            raise AssertionError(f"schema key {key} has no default in values.yaml") from None


def test_our_blocks_refuse_unknown_keys():
    """A typo anywhere in a block we own is an error, not a silently ignored value."""
    open_blocks = {"bundles.volume", "scheduler.affinity", "worker.affinity",
                   "podSecurityContext", "containerSecurityContext", "global",
                   "worker.podSecurityContext", "worker.containerSecurityContext",
                   "scheduler.podSecurityContext", "scheduler.containerSecurityContext"}

    def check(node: dict, path: str) -> None:
        node = values_table._resolve(SCHEMA, node)
        if node.get("type") != "object" or path in open_blocks:
            return
        if "properties" in node:
            assert node.get("additionalProperties") is False or path in (
                "worker.daskResources", "worker.resources.requests", "worker.resources.limits"), \
                f"{path or 'values'}: additionalProperties must be false"
            for key, child in node["properties"].items():
                check(child, f"{path}.{key}" if path else key)

    check(SCHEMA, "")
