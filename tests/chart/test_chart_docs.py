"""docs/kubernetes.md's values table, values.yaml's comments and the schema say the same thing."""

from __future__ import annotations

import importlib.util
import json
import os
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
    readme = (chartkit.REPO / "docs" / "kubernetes.md").read_text()
    assert readme == values_table.readme_with_table(readme), (
        "docs/kubernetes.md's values table is out of date: run `python ci/values_table.py --write`")


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
    tpl = (chartkit.CHART / "templates" / "_validate.tpl").read_text()  # legacyKeys lives there
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


# ---- the chart's own README (packaged with the chart) ------------------------------------

CHART_README = chartkit.CHART / "README.md"


def test_chart_readme_tables_are_current():
    """chart/README.md's values and presets tables are what values.yaml, the schema and
    chart/presets/ say now."""
    text = CHART_README.read_text()
    assert text == values_table.chart_readme(text), (
        "chart/README.md's generated tables are out of date: run "
        "`python ci/values_table.py --write`")


def test_chart_readme_covers_what_a_platform_engineer_needs():
    text = CHART_README.read_text()
    for heading in ("## Prerequisites", "## Install", "## Check values before installing",
                    "## Bundles", "## Modes", "### Upgrade between modes",
                    "## Refusals and warnings", "## Security context: hardened by default",
                    "## Image", "## Values"):
        assert f"\n{heading}\n" in text, f"chart/README.md lacks {heading}"
    for preset in chartkit.PRESETS:
        assert f"| `{preset}` |" in text


def test_helm_show_readme_of_the_packaged_chart_has_the_values_table(helm, packaged):
    """What a chart repository or Artifact Hub shows: the values reference travels with
    the chart, not only in the source repository's README."""
    proc = subprocess.run([str(chartkit.helm_binary(helm)), "show", "readme",
                           str(packaged[helm])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "| key | type | default | description |" in proc.stdout
    for key in ("mode", "bundles.repo", "worker.executor.type", "worker.memoryPerProcess"):
        assert f"| `{key}` |" in proc.stdout, f"{key} is not in `helm show readme`"
    assert "| `mode` | processes × threads, executor |" in proc.stdout
    assert "the table in the\nrepository's README" not in proc.stdout


def test_artifact_hub_image_is_the_default_image():
    chart = yaml.safe_load((chartkit.CHART / "Chart.yaml").read_text())
    images = yaml.safe_load(chart["annotations"]["artifacthub.io/images"])
    image = VALUES["image"]
    assert images == [{"name": "modelops-dask",
                       "image": f"{image['repository']}:{image['tag'] or chart['appVersion']}"}]
    assert chart["annotations"]["artifacthub.io/license"] == "Apache-2.0"


def _blocks(heading: str) -> list[str]:
    """The command lines of the bash blocks under a `## heading` of chart/README.md."""
    section = CHART_README.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in section.split("```bash\n")[1:]:
        lines += [line.split("   #", 1)[0].strip() for line in block.split("```", 1)[0].splitlines()]
    return [line for line in lines if line]


def _as_written(line: str, helm: str, tmp_path) -> subprocess.CompletedProcess:
    """Run a README line from a directory holding ./chart and my-values.yaml, with the
    README's `helm` being the given binary and no reachable cluster."""
    if not (tmp_path / "chart").exists():
        (tmp_path / "chart").symlink_to(chartkit.CHART)
    (tmp_path / "my-values.yaml").write_text(chartkit.MY_VALUES.read_text())
    kubeconfig = tmp_path / "kubeconfig"   # port 1: always refused, never someone's cluster
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "
        "'https://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: c}}]\n"
        "current-context: c\n")
    cmd = line.replace("> /dev/null", "").split()
    assert cmd[0] == "helm", line
    return subprocess.run([str(chartkit.helm_binary(helm)), *cmd[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KUBECONFIG": str(kubeconfig)})


def test_the_no_cluster_check_runs_as_written(helm, tmp_path):
    """`helm template` (the check for helm 3 and 4) renders every object without a
    cluster; helm 4's `install --dry-run=client` also prints NOTES."""
    template, dry_run = _blocks("Check values before installing")
    out = _as_written(template, helm, tmp_path)
    assert out.returncode == 0 and "kind: Deployment" in out.stdout, out.stderr
    if helm == "helm4":
        out = _as_written(dry_run, helm, tmp_path)
        assert out.returncode == 0, out.stderr
        assert "NOTES:" in out.stdout and "mode:           prod-warm (the preset)" in out.stdout


def test_helm3_dry_run_client_still_needs_a_cluster(tmp_path):
    """Why the README sends helm 3 users to `helm template` (helm/helm#13144): when helm 3
    stops contacting the cluster, this fails and the README's advice can be simplified."""
    dry_run = _blocks("Check values before installing")[1]
    out = _as_written(dry_run, "helm3", tmp_path)
    assert out.returncode != 0 and "Kubernetes cluster unreachable" in out.stderr, (
        out.stdout[-500:], out.stderr)
