#!/usr/bin/env bash
# `helm lint` renders in lint mode, where a template's `fail` is only logged
# ("[INFO] Fail: ..."), so lint passes a chart whose values cannot render. This renders the
# chart with `helm template` the way users install it and fails on any error: the given
# values file alone, then with each preset shipped in the chart, by `mode:` and by -f.
#
#   ci/render-check.sh HELM CHART VALUES_FILE
set -euo pipefail
helm=$1 chart=$2 values=$3
checked=0
render() {
  local out
  if ! out=$("$helm" template render-check "$chart" -f "$values" "$@" 2>&1 >/dev/null); then
    echo "render check failed: $helm template $chart -f $values $*" >&2
    echo "$out" >&2
    exit 1
  fi
  checked=$((checked + 1))
}
render
for preset in "$chart"/presets/*.yaml; do
  name=$(basename "$preset" .yaml)
  render --set "mode=$name"
  render -f "$preset"
done
echo "render check: $checked renders of $chart with $("$helm" version --template '{{.Version}}') ok"
