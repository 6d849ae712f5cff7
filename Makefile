# modelops-dask — the two commands: `make run` (the main job) and `make test` (everything).
# Each installs what it needs on first use (.venv, .tools/bin) and reuses it afterwards.

SHELL   := /bin/bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
TOOLS   := .tools/bin
HELM3   := $(TOOLS)/helm
HELM4   := $(TOOLS)/helm4
CT      := $(TOOLS)/ct
PRESETS := $(sort $(basename $(notdir $(wildcard values-examples/*.yaml))))
PRESET  ?= prod-warm
SIMS    ?= 300
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(TOOLS):$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: apiserver run test test-fast image-cache lint lint-helm3 lint-helm4 ct-lint render-check pytest tools tool-helm tool-podman tool-k8s tool-registry tool-keda tool-s3 venv wheelhouse bench clean help image lock

help:
	@echo "make run [PRESET=$(PRESET)] [SIMS=$(SIMS)]  run the example study on a local cluster"
	@echo "make test                          chart lint (helm 3, helm 4, ct) + the pytest suite"
	@echo "make test-fast                     the edit-test loop: no API server, container, preset series, local run, slow test or helm 4"
	@echo "make bench                         benchmarks (ratios) into bench/results.md"
	@echo "make image                         the worker image, full and slim, with podman (runtime/image/)"
	@echo "make lock                          regenerate the image's and the tests' wheelhouse lock files with uv (needs PyPI)"
	@echo "make apiserver                     a local Kubernetes API server to try helm install/upgrade/rollback (pods stay Pending)"

# A real API server (etcd, kube-apiserver, kube-controller-manager as local processes, the
# machinery of tests/cluster/apiserver) until Ctrl-C: prints a KUBECONFIG for helm and
# kubectl. Pods never run there (no kubelet); see chart/README.md, "Try it locally".
apiserver: venv tools tool-k8s
	@PYTHONPATH=tests $(PY) -m support.controlplane

## ---- installation (idempotent) -------------------------------------------------

venv: $(VENV)/.installed
$(VENV)/.installed: runtime/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e 'runtime[test]'
	@touch $@

tools:
	@bash ci/install-tools.sh $(TOOLS)

# The tests' wheelhouse: the real scientific wheels of ci/wheelhouse/requirements.lock
# (numpy, scipy, pandas, numba, matplotlib, joblib, starsim; ~175 MB, a few seconds cold),
# downloaded with their hashes verified; nothing is fetched when it is complete for the
# lock. The tests install from it offline (tests/support/wheelhouse.py): no test needs
# the network.
WHEELHOUSE := .tools/wheelhouse
wheelhouse: venv
	@$(PY) ci/wheelhouse/wheelhouse.py fetch $(WHEELHOUSE)

# $(call go_tool,TOOL,TESTS): build TOOL with ci/install-tools.sh. With Go a failed build
# fails here; without Go (and no such binary on PATH) it says that TESTS will skip (which
# fails under CI=true). linux_go_tool: the same on Linux; elsewhere it only says so.
go_tool = @if command -v go >/dev/null 2>&1; then bash ci/install-tools.sh $(TOOLS) $(1); \
	else bash ci/install-tools.sh $(TOOLS) $(1) || echo "== $(2) will skip"; fi
linux_go_tool = $(if $(filter Linux,$(shell uname -s)),$(call go_tool,$(1),$(2)),@echo "== not Linux: $(2) will skip")

# podman, runc and debootstrap from Debian for the image tests (tests/cluster/): a machine
# where that is impossible (no root, not Debian) still runs everything else; those tests
# then say why they cannot run (and fail under CI=true).
tool-podman:
	@bash ci/install-tools.sh $(TOOLS) podman || echo "tools: (the image tests will say why they cannot run)"

# The Kubernetes control plane tests/cluster/apiserver runs the chart against (etcd, kube-apiserver,
# kube-controller-manager, kubectl; tens of minutes cold, nothing once built). Only `make
# test` needs it. Without Go (and no such binaries on PATH) or off Linux those tests skip
# with one line, which fails under CI=true; with Go a failed build fails here.
tool-k8s:
	$(call linux_go_tool,k8s,tests/cluster/apiserver (the chart against a real API server))

# The reference OCI registry (distribution v3; ~4.5 min cold, nothing once built): the tests
# push the worker image and the packaged chart to it and install from it by digest/version.
tool-registry:
	@bash ci/install-tools.sh $(TOOLS) registry

# KEDA's operator and metrics API server (keda-operator, keda-adapter) and its CRDs
# (.tools/keda-crds), which the autoscaling tests (tests/cluster/autoscaling) run against
# the control plane above. KEDA needs Go 1.27.4: `go` fetches that release itself through
# the module proxy (ci/tools/keda/go.mod). Tens of minutes cold, nothing once built.
tool-keda:
	$(call linux_go_tool,keda,tests/cluster/autoscaling (KEDA against a real API server))

# The S3 API server (SeaweedFS's `weed`) the tests keep bundles and results in
# (tests/support/s3.py; ≈ 410 s of CPU cold, 24 s with a warm Go cache, nothing once
# built). Without Go (and no weed on PATH) the S3 tests skip with one line, which fails
# under CI=true; with Go a failed build fails here.
tool-s3:
	$(call go_tool,weed,the S3 tests (bundles and results in S3))

# `make run` renders the chart with helm 3 only: it does not wait for helm4 and ct builds
tool-helm:
	@bash ci/install-tools.sh $(TOOLS) helm

## ---- the main job ----------------------------------------------------------------

# The example study (runtime/examples/sir) on a real local Dask cluster started from the
# chart rendered with the preset: `modelops-runtime local` (embedded local mode). Presets
# with executor `direct` run the bundle in the worker's own environment (locally: .venv,
# the stand-in for the worker image), so the example's requirements are installed there first.
EXAMPLE := runtime/examples/sir
run: venv tool-helm
	@if grep -Eq '^[[:space:]]+type:[[:space:]]*direct' values-examples/$(PRESET).yaml 2>/dev/null; then \
	  echo "== $(PRESET) runs bundles in the worker's environment: installing $(EXAMPLE)/bundle/requirements.txt into $(VENV)"; \
	  $(PY) -m pip install --quiet -r $(EXAMPLE)/bundle/requirements.txt; fi
	$(VENV)/bin/modelops-runtime local -f values-examples/$(PRESET).yaml \
	  --study $(EXAMPLE) --sims $(SIMS)

## ---- tests -------------------------------------------------------------------------

test: venv tools tool-k8s tool-keda lint pytest

lint: lint-helm3 lint-helm4 ct-lint render-check

# The chart has no default for bundles.repo, so CI lints with ci/lint-values.yaml (what every
# user's values file must say). helm 3 lints that here; ct-lint lints every preset with the
# same helm 3 (`helm lint --strict` per chart/ci/*-values.yaml, see ci/ct.yaml); helm 4
# lints both. `helm lint` only logs a template's `fail`, so render-check renders the same
# values with `helm template` on both helms and fails when they do not render.
LINT_VALUES := ci/lint-values.yaml
lint-helm3:
	@echo "== helm lint --strict with $$($(HELM3) version --template '{{.Version}}') on $(LINT_VALUES)"
	@$(HELM3) lint --strict chart -f $(LINT_VALUES)

lint-helm4:
	@echo "== helm lint --strict with $$($(HELM4) version --template '{{.Version}}') on $(LINT_VALUES) and every preset"
	@$(HELM4) lint --strict chart -f $(LINT_VALUES)
	@for p in $(PRESETS); do $(HELM4) lint --strict chart -f $(LINT_VALUES) -f values-examples/$$p.yaml --quiet || exit 1; done

render-check:
	@echo "== helm template (helm 3 and helm 4) on $(LINT_VALUES), alone and with every preset"
	@bash ci/render-check.sh $(HELM3) chart $(LINT_VALUES)
	@bash ci/render-check.sh $(HELM4) chart $(LINT_VALUES)

ct-lint:
	@echo "== ct $$($(CT) version | awk 'NR == 1 {print $$2}') lint: yamllint, yamale and helm lint --strict with $$(helm version --template '{{.Version}}') on every preset"
	$(CT) lint --config ci/ct.yaml --lint-conf ci/lintconf.yaml --chart-yaml-schema ci/chart_schema.yaml

# The install step (every target before the test run) does all that needs the network the
# first time: .venv, the tools, the wheelhouse, the image's base and locked wheels. The test
# run itself has none: ci/no-network.sh runs pytest in a new network namespace holding only
# lo (needs root; elsewhere it says so in one line, and fails under CI=true).
NO_NETWORK := bash ci/no-network.sh
pytest: venv tools tool-podman tool-k8s tool-registry tool-keda tool-s3 wheelhouse image-cache
	$(NO_NETWORK) $(PY) -m pytest $(PYTEST_ARGS)

# The edit-test loop (under 5 minutes on 2 quiet cores): every test but those marked apiserver,
# container, presets, cluster (the `local` command end to end), slow or helm4 (chart tests run
# again with helm 4) (tests/support/markers.py; docs/contributing.md).
# Needs helm 3 and 4, the registry and the S3 server (no k8s build, no podman). Not CI:
# `make test` runs everything. No test selected is a failure (pytest's exit code 5).
FAST := not apiserver and not container and not presets and not cluster and not slow and not helm4
test-fast: venv tools tool-registry tool-s3 wheelhouse
	$(NO_NETWORK) $(PY) -m pytest -m "$(FAST)" $(PYTEST_ARGS)

# The worker image, both flavours, against the locally made base (cached by content).
image: tool-podman
	@bash runtime/image/build.sh full
	@bash runtime/image/build.sh slim

# The images the container tests run, built before the network-free test run (the base from
# the apt mirror, the locked wheels from PyPI, the first time; cached by content after, so
# the tests' own build finds every layer). A machine that cannot build (exit 3: no root, no
# podman) goes on: those tests then say why they cannot run.
image-cache: tool-podman
	@for f in full slim; do bash runtime/image/build.sh $$f >/dev/null || { rc=$$?; \
	  [[ $$rc == 3 ]] || exit $$rc; echo "image: (the image tests will say why they cannot run)"; break; }; done

lock: venv
	$(PY) runtime/image/lock.py
	$(PY) ci/wheelhouse/wheelhouse.py lock

bench: venv tools
	$(PY) bench/run.py

clean:
	rm -rf .state
