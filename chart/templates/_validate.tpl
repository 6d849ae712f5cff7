{{/*
Render-time validation: every refusal the schema cannot express (combinations of values,
values Kubernetes or the runtime would refuse later). One `define` per concern, all called
from modelops-dask.validateValues, which worker-deployment.yaml includes once at its top:
a `fail` anywhere aborts the whole render, so no object is ever rendered half-checked.

Each message says what was wrong, what is allowed and what to set instead.
Add a new concern as its own `define` below and call it from modelops-dask.validateValues.
*/}}

{{- define "modelops-dask.validateValues" -}}
{{- include "modelops-dask.validate.workerEnv" . -}}
{{- include "modelops-dask.validate.workerArgs" . -}}
{{- include "modelops-dask.validate.executor" . -}}
{{- include "modelops-dask.validate.bundles" . -}}
{{- include "modelops-dask.validate.workerResources" . -}}
{{- end -}}

{{/* worker.extraEnv must not shadow a variable the chart renders from a value or fixes. */}}
{{- define "modelops-dask.validate.workerEnv" -}}
{{- $owners := dict
  "MODELOPS_EXECUTOR_TYPE" "worker.executor.type"
  "MODELOPS_MAX_WARM_PROCESSES" "worker.executor.maxWarmProcesses"
  "MODELOPS_FORCE_FRESH_VENV" "worker.executor.forceFreshVenv"
  "MODELOPS_VALIDATE_DEPS" "worker.executor.validateDeps"
  "MODELOPS_MAX_PROCESS_REUSE" "worker.executor.maxProcessReuse"
  "MODELOPS_PROCESS_TTL" "worker.executor.processTTL"
  "MODELOPS_MEM_LIMIT_BYTES" "worker.executor.memLimitPerProcess"
  "MODELOPS_POOL_MEMORY_BYTES" "worker.executor.poolMemoryPerProcess"
  "MODELOPS_TASK_TIMEOUT" "worker.executor.taskTimeout"
  "MODELOPS_ENV_PASSTHROUGH" "worker.executor.envPassthrough"
  "MODELOPS_LOG_LEVEL" "worker.logLevel"
  "MODELOPS_BUNDLE_REPO" "bundles.repo"
-}}
{{- $fixed := dict
  "MODELOPS_BUNDLE_CACHE_DIR" "it is the path of the bundle-cache volume"
  "MODELOPS_VENVS_DIR" "it is a path on the venv-cache volume"
  "UV_CACHE_DIR" "uv's cache must be on the venv-cache volume so that venvs can hard-link from it"
-}}
{{- range .Values.worker.extraEnv -}}
{{- $name := .name -}}
{{- with get $owners $name -}}
{{- fail (printf "worker.extraEnv sets %s, which the chart renders from %s. Remove it from worker.extraEnv and set %s in your values instead." $name . .) -}}
{{- end -}}
{{- with get $fixed $name -}}
{{- fail (printf "worker.extraEnv sets %s, which the chart fixes because %s. Remove it from worker.extraEnv (to persist venvs, use worker.cache.venvsExistingClaim)." $name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* worker.extraArgs must not repeat a `dask worker` flag the chart renders or forbids. */}}
{{- define "modelops-dask.validate.workerArgs" -}}
{{- $flagOwners := dict
  "--nworkers" "worker.processes" "--nprocs" "worker.processes" "--nthreads" "worker.threads"
  "--memory-limit" "worker.memoryPerProcess" "--resources" "worker.daskResources"
-}}
{{- $flagFixed := dict
  "--dashboard-address" "port 8788 serves the probes' /health and the scraped /metrics"
  "--no-dashboard" "the dashboard serves the probes' /health and the scraped /metrics"
  "--no-nanny" "worker.processes (--nworkers) needs a nanny per process"
-}}
{{- range .Values.worker.extraArgs -}}
{{- $flag := regexReplaceAll "=.*$" . "" -}}
{{- with get $flagOwners $flag -}}
{{- fail (printf "worker.extraArgs contains %s, which the chart renders from %s. Remove it from worker.extraArgs and set %s instead." $flag . .) -}}
{{- end -}}
{{- with get $flagFixed $flag -}}
{{- fail (printf "worker.extraArgs contains %s, which the chart does not allow: %s. Remove it from worker.extraArgs." $flag .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The executor keys must describe one consistent mode. */}}
{{- define "modelops-dask.validate.executor" -}}
{{- $x := .Values.worker.executor -}}
{{- if and (eq $x.type "direct") $x.forceFreshVenv -}}
{{- fail "worker.executor.forceFreshVenv=true needs worker.executor.type=isolated_warm: the direct executor runs tasks inside the Dask worker process and builds no venvs. Use the diagnose-fresh-venv preset, or set forceFreshVenv: false." -}}
{{- end -}}
{{- if and (eq $x.type "isolated_warm") $x.memLimitPerProcess -}}
{{- $limit := include "modelops-dask.mebibytes" $x.memLimitPerProcess | atoi -}}
{{- $pool := include "modelops-dask.mebibytes" $x.poolMemoryPerProcess | atoi -}}
{{- if gt $limit $pool -}}
{{- fail (printf "worker.executor.memLimitPerProcess=%s (%dMi) is larger than worker.executor.poolMemoryPerProcess=%s (%dMi): one warm process may not use more than the whole pool budget. Lower memLimitPerProcess or raise poolMemoryPerProcess." $x.memLimitPerProcess $limit $x.poolMemoryPerProcess $pool) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Where the workers get bundles: refused unless something can put them there. A path needs a
volume (the image's root filesystem is read-only and ships no bundles); a URL is reached by
the runtime itself through fsspec, file:// included (a repository built into a derived
image), so nothing is mounted for it.
*/}}
{{- define "modelops-dask.validate.bundles" -}}
{{- $repo := .Values.bundles.repo -}}
{{- $volume := .Values.bundles.volume -}}
{{- $howTo := "either an fsspec URL the workers can reach (bundles.repo: s3://bucket/prefix, with credentials through worker.extraEnvFrom and the fsspec backend, e.g. s3fs, in the image) or a path with your repository mounted there (bundles.repo: /var/lib/modelops/bundle-repo plus bundles.volume: {persistentVolumeClaim: {claimName: <your claim>}} or any other volume source)" -}}
{{- $isURL := regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $repo -}}
{{- if not $repo -}}
{{- fail (printf "bundles.repo is not set: the workers need a bundle repository and the chart has no default (the image holds no bundles and its root filesystem is read-only). Set it in your values file to %s." $howTo) -}}
{{- else if and $isURL $volume -}}
{{- fail (printf "bundles.volume is set but bundles.repo=%q is a URL, not an absolute path: the volume is mounted at bundles.repo. Set bundles.repo to a path such as /var/lib/modelops/bundle-repo, or remove bundles.volume for a URL repository." $repo) -}}
{{- else if and (not $isURL) (not (hasPrefix "/" $repo)) -}}
{{- fail (printf "bundles.repo=%q is neither an absolute path nor a URL. Set it to %s." $repo $howTo) -}}
{{- else if hasKey ($volume | default dict) "emptyDir" -}}
{{- fail "bundles.volume is an emptyDir: it starts empty and is mounted read-only, so it never holds a bundle. Use a volume source that already holds your repository (e.g. {persistentVolumeClaim: {claimName: <your claim>}} or nfs), or an fsspec URL in bundles.repo." -}}
{{- else if and (not $isURL) (not $volume) -}}
{{- fail (printf "bundles.repo=%q is a path in the worker pods but bundles.volume is empty: nothing would put bundles there (the image's root filesystem is read-only and holds none), so every task would fail with BundleNotFound. Mount your repository there with bundles.volume (e.g. {persistentVolumeClaim: {claimName: <your claim>}}, or any volume source such as nfs), or use an fsspec URL instead (s3://bucket/prefix; file://%s if your own image contains the repository)." $repo $repo) -}}
{{- end -}}
{{- end -}}

{{/*
Explicit worker.resources: memory at least what the mode needs (the pod-memory formula),
and no request above its limit (the API server refuses that).
*/}}
{{- define "modelops-dask.validate.workerResources" -}}
{{- $mem := include "modelops-dask.workerMemory" . | fromJson -}}
{{- $needMi := int64 $mem.mi -}}
{{- $explicit := .Values.worker.resources | default dict -}}
{{- $requests := $explicit.requests | default dict -}}
{{- $limits := $explicit.limits | default dict -}}
{{- range $kind, $list := dict "requests" $requests "limits" $limits -}}
{{- with $list.memory -}}
{{- if lt (include "modelops-dask.mebibytes" . | atoi) $needMi -}}
{{- fail (printf "worker.resources.%s.memory=%s is smaller than the worker mode needs: %s. Raise it to at least %dMi, or remove it to use the derived value." $kind . $mem.formula $needMi) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $requests.memory $limits.memory -}}
{{- if gt (include "modelops-dask.mebibytes" $requests.memory | atoi) (include "modelops-dask.mebibytes" $limits.memory | atoi) -}}
{{- fail (printf "worker.resources.requests.memory=%s is larger than worker.resources.limits.memory=%s: Kubernetes refuses a request above its limit. Lower the request or raise the limit, or remove one of them (the chart derives it)." $requests.memory $limits.memory) -}}
{{- end -}}
{{- end -}}
{{- if and $requests.cpu $limits.cpu -}}
{{- if gt (include "modelops-dask.millicores" $requests.cpu | atoi) (include "modelops-dask.millicores" $limits.cpu | atoi) -}}
{{- fail (printf "worker.resources.requests.cpu=%v is larger than worker.resources.limits.cpu=%v: Kubernetes refuses a request above its limit. Lower the request or raise the limit, or remove one of them (the chart derives it)." $requests.cpu $limits.cpu) -}}
{{- end -}}
{{- end -}}
{{- end -}}
