"""`mode:` against the real API server: a release installed from the packaged chart (as from
a chart repository, where no values-examples/ exist) switches modes with
`helm upgrade --reuse-values --set mode=...`, and the workers are replaced (Recreate)."""

from __future__ import annotations

import subprocess

from kubekit import CHART, MY_VALUES, PRESETS_DIR, RELEASE, helm_binary


def _package(helm: str, dest) -> str:
    proc = subprocess.run([str(helm_binary(helm)), "package", str(CHART), "-d", str(dest)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (tgz,) = dest.glob("modelops-dask-*.tgz")
    return str(tgz)


def _live_mode(kube, namespace) -> tuple:
    dep = kube.deployment(namespace, "worker")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    args = c["args"]
    return (dep["spec"]["strategy"]["type"], args[args.index("--nworkers") + 1],
            args[args.index("--nthreads") + 1], env["MODELOPS_EXECUTOR_TYPE"],
            env["MODELOPS_FORCE_FRESH_VENV"], env["MODELOPS_MAX_PROCESS_REUSE"])


def test_reuse_values_set_mode_switches_a_release_installed_from_the_package(
        kube, helm, namespace, tmp_path):
    tgz = _package(helm, tmp_path)
    out = kube.helm(helm, "install", RELEASE, tgz, "-n", namespace, "-f", str(MY_VALUES),
                    "--set", "mode=debug-isolated")
    assert "mode:           debug-isolated (the preset)" in out.stdout
    first = kube.wait_rolled(namespace, "worker")["metadata"]["name"]
    assert _live_mode(kube, namespace) == ("Recreate", "1", "1", "direct", "false", "1000")

    out = kube.helm(helm, "upgrade", RELEASE, tgz, "-n", namespace, "--reuse-values",
                    "--set", "mode=fresh-process")
    assert "mode:           fresh-process (the preset)" in out.stdout
    assert "WARNING" not in out.stdout
    assert _live_mode(kube, namespace) == ("Recreate", "4", "1", "isolated_warm", "false", "1")
    assert kube.wait_rolled(namespace, "worker")["metadata"]["name"] != first

    # the user values helm keeps for the release: only what was set, never the mode keys
    kept = kube.helm(helm, "get", "values", RELEASE, "-n", namespace, "-o", "json").stdout
    assert '"mode":"fresh-process"' in kept.replace(" ", "")
    assert "processes" not in kept and "maxProcessReuse" not in kept


def test_reuse_values_keeps_a_preset_files_keys_and_notes_say_so(kube, helm, namespace):
    """Installed the pre-`mode` way (-f values-examples/debug-isolated.yaml): its five keys
    are user values, so --reuse-values --set mode=... keeps them; NOTES warns."""
    kube.helm(helm, "install", RELEASE, str(CHART), "-n", namespace, "-f", str(MY_VALUES),
              "-f", str(PRESETS_DIR / "debug-isolated.yaml"))
    out = kube.helm(helm, "upgrade", RELEASE, str(CHART), "-n", namespace, "--reuse-values",
                    "--set", "mode=fresh-process")
    assert "WARNING: mode=fresh-process, but the effective mode is the debug-isolated preset" \
        in out.stdout
    assert _live_mode(kube, namespace)[1:] == ("1", "1", "direct", "false", "1000")
