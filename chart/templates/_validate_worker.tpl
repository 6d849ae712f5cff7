{{/* Checks of the worker's own values (see _validate.tpl for how checks are run). */}}

{{/* worker.extraEnv must not shadow a variable the chart renders from a value or fixes. */}}
{{- define "modelops-dask.validate.workerEnv" -}}
{{- $errors := list -}}
{{- $owners := dict
  "MODELOPS_EXECUTOR_TYPE" "worker.executor.type"
  "MODELOPS_MAX_WARM_PROCESSES" "worker.executor.maxWarmProcesses"
  "MODELOPS_FORCE_FRESH_VENV" "worker.executor.forceFreshVenv"
  "MODELOPS_VALIDATE_DEPS" "worker.executor.validateDeps"
  "MODELOPS_MAX_PROCESS_REUSE" "worker.executor.maxProcessReuse"
  "MODELOPS_PROCESS_TTL" "worker.executor.processTTL"
  "MODELOPS_MAX_TASK_PROCESSES" "worker.executor.maxTaskProcesses"
  "MODELOPS_FRESH_PROCESS_FROM" "worker.executor.freshProcessFrom"
  "MODELOPS_FRESH_VENVS_AHEAD" "worker.executor.freshVenvsAhead"
  "MODELOPS_NATIVE_THREADS" "worker.executor.nativeThreads"
  "MODELOPS_MEM_LIMIT_BYTES" "worker.executor.memLimitPerProcess"
  "MODELOPS_POOL_MEMORY_BYTES" "worker.executor.poolMemoryPerProcess"
  "MODELOPS_TASK_TIMEOUT" "worker.executor.taskTimeout"
  "MODELOPS_ENV_PASSTHROUGH" "worker.executor.envPassthrough"
  "MODELOPS_WARM_WRITABLE_PATHS" "worker.executor.writablePaths"
  "MODELOPS_VENVS_MAX_BYTES" "worker.cache.venvsBudget"
  "MODELOPS_UV_CACHE_MAX_BYTES" "worker.cache.uvCacheBudget"
  "MODELOPS_BUNDLES_MAX_BYTES" "worker.cache.bundlesBudget"
  "MODELOPS_ALLOW_SDIST_BUILDS" "worker.executor.allowSdistBuilds"
  "MODELOPS_LOG_LEVEL" "worker.logLevel"
  "MODELOPS_BUNDLE_REPO" "bundles.repo"
  "MODELOPS_BUNDLE_CREDENTIALS" "bundles.credentials.secretName"
-}}
{{- $creds := .Values.bundles.credentials | default dict -}}
{{- if $creds.endpoint }}{{ $_ := set $owners "AWS_ENDPOINT_URL" "bundles.credentials.endpoint" }}{{ end -}}
{{- if $creds.region }}{{ $_ := set $owners "AWS_DEFAULT_REGION" "bundles.credentials.region" }}{{ end -}}
{{- range (include "modelops-dask.nativeThreadVars" . | splitList " ") -}}
{{- $_ := set $owners . "worker.executor.nativeThreads" -}}
{{- end -}}
{{- $fixed := dict
  "MODELOPS_BUNDLE_CACHE_DIR" "it is the path of the bundle-cache volume"
  "MODELOPS_VENVS_DIR" "it is a path on the venv-cache volume"
  "UV_CACHE_DIR" "uv's cache must be on the venv-cache volume so that venvs can hard-link from it"
-}}
{{- range .Values.worker.extraEnv -}}
{{- $name := .name -}}
{{- with get $owners $name -}}
{{- $errors = append $errors (printf "worker.extraEnv sets %s, which the chart renders from %s. Remove it from worker.extraEnv and set %s in your values instead." $name . .) -}}
{{- end -}}
{{- with get $fixed $name -}}
{{- $errors = append $errors (printf "worker.extraEnv sets %s, which the chart fixes because %s. Remove it from worker.extraEnv (to persist venvs, use worker.cache.venvsExistingClaim)." $name .) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* worker.extraArgs must not repeat a `dask worker` flag the chart renders or forbids. */}}
{{- define "modelops-dask.validate.workerArgs" -}}
{{- $errors := list -}}
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
{{- $errors = append $errors (printf "worker.extraArgs contains %s, which the chart renders from %s. Remove it from worker.extraArgs and set %s instead." $flag . .) -}}
{{- end -}}
{{- with get $flagFixed $flag -}}
{{- $errors = append $errors (printf "worker.extraArgs contains %s, which the chart does not allow: %s. Remove it from worker.extraArgs." $flag .) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* The executor keys must describe one consistent mode. */}}
{{- define "modelops-dask.validate.executor" -}}
{{- $errors := list -}}
{{- $x := .Values.worker.executor -}}
{{- if and (eq $x.type "direct") $x.forceFreshVenv -}}
{{- $errors = append $errors "worker.executor.forceFreshVenv=true needs worker.executor.type=isolated_warm: the direct executor runs tasks inside the Dask worker process and builds no venvs. Use the diagnose-fresh-venv preset, or set forceFreshVenv: false." -}}
{{- end -}}
{{- $caches := include "modelops-dask.cacheRoot" . -}}
{{- range $x.writablePaths -}}
{{- $p := clean . -}}
{{- if or (eq $p $caches) (hasPrefix (printf "%s/" (trimSuffix "/" $p)) (printf "%s/" $caches)) (hasPrefix (printf "%s/" $caches) $p) -}}
{{- $errors = append $errors (printf "worker.executor.writablePaths has %s, which is, holds or lies in the worker's caches (%s: the unpacked bundles and the venvs, read-only by design: they never change once published). Remove it; tasks write in their working directory (TMPDIR, HOME) and in the other writablePaths." . $caches) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $x.type "isolated_warm") $x.memLimitPerProcess -}}
{{- $limit := include "modelops-dask.mebibytes" $x.memLimitPerProcess | atoi -}}
{{- $pool := include "modelops-dask.mebibytes" $x.poolMemoryPerProcess | atoi -}}
{{- if gt $limit $pool -}}
{{- $errors = append $errors (printf "worker.executor.memLimitPerProcess=%s (%dMi) is larger than worker.executor.poolMemoryPerProcess=%s (%dMi): one warm process may not use more than the whole pool budget. Lower memLimitPerProcess or raise poolMemoryPerProcess." $x.memLimitPerProcess $limit $x.poolMemoryPerProcess $pool) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
A cache budget must be below the sizeLimit of the emptyDir that holds the cache: the kubelet
evicts the pod as soon as the volume holds more than its limit, and the runtime's GC frees
space only once the cache is above its budget, so a budget at or above the limit is never
reached. The venv volume holds two caches, the venvs and uv's cache (whose budget counts
only the files no venv links), so venvsBudget + uvCacheBudget must be below its limit too.
Compared in bytes through modelops-dask.quantity, so 6Gi, 6442450944, 6.5G and 10000Mi
compare as Kubernetes would. A sizeLimit of 0 is no limit to the kubelet; a venv cache on
venvsExistingClaim has none here.
*/}}
{{- define "modelops-dask.validate.cacheBudgets" -}}
{{- $errors := list -}}
{{- $c := .Values.worker.cache | default dict -}}
{{- $venvDefaults := "6Gi for the venvs and 2Gi for uv's cache, of 10Gi" -}}
{{- $caches := list
  (dict "budget" "venvsBudget" "limit" "venvsSizeLimit" "volume" "venv-cache" "holds" "the venvs and uv's cache" "default" $venvDefaults "skip" $c.venvsExistingClaim)
  (dict "budget" "uvCacheBudget" "limit" "venvsSizeLimit" "volume" "venv-cache" "holds" "the venvs and uv's cache" "default" $venvDefaults "skip" $c.venvsExistingClaim)
  (dict "budget" "bundlesBudget" "limit" "bundlesSizeLimit" "volume" "bundle-cache" "holds" "the unpacked bundles" "default" "1536Mi of 2Gi" "skip" false) -}}
{{- range $caches -}}
{{- $budget := index $c .budget -}}
{{- $limit := index $c .limit -}}
{{- if and (not (kindIs "invalid" $budget)) (not (kindIs "invalid" $limit)) (not .skip) -}}
{{- $budgetBytes := include "modelops-dask.quantity" $budget | float64 -}}
{{- $limitBytes := include "modelops-dask.quantity" $limit | float64 -}}
{{- if and (gt $limitBytes 0.0) (ge $budgetBytes $limitBytes) -}}
{{- $errors = append $errors (printf "worker.cache.%s=%v (%.0f bytes) is not below worker.cache.%s=%v (%.0f bytes), the sizeLimit of the %s emptyDir (%s): the kubelet evicts the worker pod once the volume holds more than its limit, while the cache is cleaned only when it grows past its budget, so the pod would be evicted before any cleanup. Set worker.cache.%s below worker.cache.%s with room to spare (the defaults: %s), or raise worker.cache.%s." .budget $budget $budgetBytes .limit $limit $limitBytes .volume .holds .budget .limit .default .limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $venvs := $c.venvsBudget -}}
{{- $uv := $c.uvCacheBudget -}}
{{- $limit := $c.venvsSizeLimit -}}
{{- if and (not (kindIs "invalid" $venvs)) (not (kindIs "invalid" $uv)) (not (kindIs "invalid" $limit)) (not $c.venvsExistingClaim) -}}
{{- $sum := addf (include "modelops-dask.quantity" $venvs | float64) (include "modelops-dask.quantity" $uv | float64) -}}
{{- $limitBytes := include "modelops-dask.quantity" $limit | float64 -}}
{{- if and (gt $limitBytes 0.0) (ge $sum $limitBytes) -}}
{{- $errors = append $errors (printf "worker.cache.venvsBudget=%v plus worker.cache.uvCacheBudget=%v (%.0f bytes together) is not below worker.cache.venvsSizeLimit=%v (%.0f bytes), the sizeLimit of the venv-cache emptyDir that holds both the venvs and uv's cache: each cache is cleaned only when it grows past its own budget, so both may be full at once, and the kubelet evicts the worker pod once the volume holds more than its limit. Lower worker.cache.venvsBudget or worker.cache.uvCacheBudget so that their sum is below worker.cache.venvsSizeLimit with room to spare (the defaults: %s), or raise worker.cache.venvsSizeLimit." $venvs $uv $sum $limit $limitBytes $venvDefaults) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Where the workers get bundles: refused unless something can put them there. A path needs a
volume (the image's root filesystem is read-only and ships no bundles); a URL is reached by
the runtime itself through fsspec, file:// included (a repository built into a derived
image), so nothing is mounted for it.
*/}}
{{- define "modelops-dask.validate.bundles" -}}
{{- $errors := list -}}
{{- $repo := .Values.bundles.repo -}}
{{- $volume := .Values.bundles.volume -}}
{{- $howTo := "either an fsspec URL the workers can reach (bundles.repo: s3://bucket/prefix, with a Secret holding its credentials named in bundles.credentials.secretName; s3fs is in the image's full flavour) or a path with your repository mounted there (bundles.repo: /var/lib/modelops/bundle-repo plus bundles.volume: {persistentVolumeClaim: {claimName: <your claim>}} or any other volume source)" -}}
{{- $isURL := regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $repo -}}
{{- if not $repo -}}
{{- $errors = append $errors (printf "bundles.repo is not set: the workers need a bundle repository and the chart has no default (the image holds no bundles and its root filesystem is read-only). Set it in your values file to %s." $howTo) -}}
{{- else if and $isURL $volume -}}
{{- $errors = append $errors (printf "bundles.volume is set but bundles.repo=%q is a URL, not an absolute path: the volume is mounted at bundles.repo. Set bundles.repo to a path such as /var/lib/modelops/bundle-repo, or remove bundles.volume for a URL repository." $repo) -}}
{{- else if and (not $isURL) (not (hasPrefix "/" $repo)) -}}
{{- $errors = append $errors (printf "bundles.repo=%q is neither an absolute path nor a URL. Set it to %s." $repo $howTo) -}}
{{- else if hasKey ($volume | default dict) "emptyDir" -}}
{{- $errors = append $errors "bundles.volume is an emptyDir: it starts empty and is mounted read-only, so it never holds a bundle. Use a volume source that already holds your repository (e.g. {persistentVolumeClaim: {claimName: <your claim>}} or nfs), or an fsspec URL in bundles.repo." -}}
{{- else if and (not $isURL) (not $volume) -}}
{{- $errors = append $errors (printf "bundles.repo=%q is a path in the worker pods but bundles.volume is empty: nothing would put bundles there (the image's root filesystem is read-only and holds none), so every task would fail with BundleNotFound. Mount your repository there with bundles.volume (e.g. {persistentVolumeClaim: {claimName: <your claim>}}, or any volume source such as nfs), or use an fsspec URL instead (s3://bucket/prefix; file://%s if your own image contains the repository)." $repo $repo) -}}
{{- end -}}
{{- $creds := .Values.bundles.credentials | default dict -}}
{{- $set := list -}}
{{- range $key := list "secretName" "endpoint" "region" -}}
{{- if get $creds $key }}{{ $set = append $set (printf "bundles.credentials.%s" $key) }}{{ end -}}
{{- end -}}
{{- if and $repo $set (not $isURL) -}}
{{- $errors = append $errors (printf "%s is set but bundles.repo=%q is a path: credentials are for a URL repository the workers reach themselves (s3://bucket/prefix). Remove %s, or set bundles.repo to your repository's URL." (join " and " $set) $repo (join " and " $set)) -}}
{{- else if and $isURL (not (hasPrefix "s3://" $repo)) (or $creds.endpoint $creds.region) -}}
{{- $errors = append $errors (printf "bundles.credentials.endpoint and .region are for an s3:// repository (they are rendered as AWS_ENDPOINT_URL and AWS_DEFAULT_REGION, which only S3 clients read), but bundles.repo=%q. Remove them, or use an s3:// URL (GCS through its S3 API: s3://<bucket>/<prefix> with endpoint https://storage.googleapis.com)." $repo) -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Explicit worker.resources: memory at least what the mode needs (the pod-memory formula),
and no request above its limit (the API server refuses that).
*/}}
{{- define "modelops-dask.validate.workerResources" -}}
{{- $errors := list -}}
{{- $mem := include "modelops-dask.workerMemory" . | fromJson -}}
{{- $needMi := int64 $mem.mi -}}
{{- $explicit := .Values.worker.resources | default dict -}}
{{- $requests := $explicit.requests | default dict -}}
{{- $limits := $explicit.limits | default dict -}}
{{- range $kind, $list := dict "requests" $requests "limits" $limits -}}
{{- with $list.memory -}}
{{- if lt (include "modelops-dask.mebibytes" . | atoi) $needMi -}}
{{- $errors = append $errors (printf "worker.resources.%s.memory=%s is smaller than the worker mode needs: %s. Raise it to at least %dMi, or remove it to use the derived value." $kind . $mem.formula $needMi) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $requests.memory $limits.memory -}}
{{- if gt (include "modelops-dask.mebibytes" $requests.memory | atoi) (include "modelops-dask.mebibytes" $limits.memory | atoi) -}}
{{- $errors = append $errors (printf "worker.resources.requests.memory=%s is larger than worker.resources.limits.memory=%s: Kubernetes refuses a request above its limit. Lower the request or raise the limit, or remove one of them (the chart derives it)." $requests.memory $limits.memory) -}}
{{- end -}}
{{- end -}}
{{- if and $requests.cpu $limits.cpu -}}
{{- if gt (include "modelops-dask.millicores" $requests.cpu | atoi) (include "modelops-dask.millicores" $limits.cpu | atoi) -}}
{{- $errors = append $errors (printf "worker.resources.requests.cpu=%v is larger than worker.resources.limits.cpu=%v: Kubernetes refuses a request above its limit. Lower the request or raise the limit, or remove one of them (the chart derives it)." $requests.cpu $limits.cpu) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* What the API server refuses in a DeploymentStrategy. */}}
{{- define "modelops-dask.validate.strategy" -}}
{{- $errors := list -}}
{{- $s := .Values.worker.strategy | default dict -}}
{{- if not $s.type -}}
{{- $errors = append $errors (printf "worker.strategy has no type: set worker.strategy.type to Recreate (the chart's default: a mode switch never mixes old-mode and new-mode workers) or RollingUpdate. %s" (include "modelops-dask.missingDefaultHint" .)) -}}
{{- end -}}
{{- if and (eq $s.type "Recreate") $s.rollingUpdate -}}
{{- $errors = append $errors "worker.strategy.rollingUpdate is set but worker.strategy.type=Recreate: Kubernetes refuses rollingUpdate with Recreate. Remove rollingUpdate, or set type: RollingUpdate." -}}
{{- end -}}
{{- if eq $s.type "RollingUpdate" -}}
{{- $ru := $s.rollingUpdate | default dict -}}
{{- $surge := toString (ternary $ru.maxSurge "25%" (hasKey $ru "maxSurge")) -}}
{{- $unavailable := toString (ternary $ru.maxUnavailable "25%" (hasKey $ru "maxUnavailable")) -}}
{{- if and (regexMatch "^0%?$" $surge) (regexMatch "^0%?$" $unavailable) -}}
{{- $errors = append $errors "worker.strategy.rollingUpdate has maxSurge and maxUnavailable both 0: Kubernetes refuses it (the rollout could never make progress). Allow at least one extra pod (maxSurge: 1) or one missing pod (maxUnavailable: 1)." -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* The API server refuses two constraints with the same topologyKey and whenUnsatisfiable. */}}
{{- define "modelops-dask.validate.topologySpread" -}}
{{- $errors := list -}}
{{- $seen := dict -}}
{{- range .Values.worker.topologySpreadConstraints -}}
{{- $pair := printf "%s/%s" .topologyKey .whenUnsatisfiable -}}
{{- if hasKey $seen $pair -}}
{{- $errors = append $errors (printf "worker.topologySpreadConstraints has two constraints with topologyKey %s and whenUnsatisfiable %s: Kubernetes refuses the duplicate. Merge them into one (the chart's default is kubernetes.io/hostname with ScheduleAnyway; a list you set replaces it)." .topologyKey .whenUnsatisfiable) -}}
{{- end -}}
{{- $_ := set $seen $pair true -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
worker.autoscaling (_autoscaling.tpl): the pod count is KEDA's alone, its range is a range,
and the diagnosis presets keep their fixed layout. Needs the resolved mode.
*/}}
{{- define "modelops-dask.validate.autoscaling" -}}
{{- $errors := list -}}
{{- $a := .Values.worker.autoscaling | default dict -}}
{{- if $a.enabled -}}
{{- $missing := list -}}
{{- range $key := list "minReplicas" "maxReplicas" "pollingInterval" "cooldownPeriod" "scaleUpStabilizationSeconds" "scaleDownStabilizationSeconds" -}}
{{- if kindIs "invalid" (index $a $key) }}{{ $missing = append $missing (printf "worker.autoscaling.%s" $key) }}{{ end -}}
{{- end -}}
{{- if $missing -}}
{{- $errors = append $errors (printf "worker.autoscaling.enabled=true but %s not set: set them (the chart's defaults: minReplicas 1, maxReplicas 10, pollingInterval 15, cooldownPeriod 300, scaleUpStabilizationSeconds 0, scaleDownStabilizationSeconds 300). %s" (join ", " $missing) (include "modelops-dask.missingDefaultHint" .)) -}}
{{- end -}}
{{- if not (kindIs "invalid" .Values.worker.replicas) -}}
{{- $errors = append $errors (printf "worker.replicas=%d is set together with worker.autoscaling.enabled=true: with autoscaling the worker pod count is KEDA's (between worker.autoscaling.minReplicas and maxReplicas) and a fixed count would undo its work on every helm upgrade. Remove worker.replicas (--set worker.replicas=null), or set worker.autoscaling.enabled=false." (int64 .Values.worker.replicas)) -}}
{{- end -}}
{{- if and (not (kindIs "invalid" $a.minReplicas)) (not (kindIs "invalid" $a.maxReplicas)) -}}
{{- if lt (int64 $a.maxReplicas) (int64 $a.minReplicas) -}}
{{- $errors = append $errors (printf "worker.autoscaling.maxReplicas=%d is below worker.autoscaling.minReplicas=%d: the range of worker pods is empty. Set maxReplicas to at least minReplicas." (int64 $a.maxReplicas) (int64 $a.minReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $diagnosis := list "debug-isolated" "debug-parallel" "diagnose-fresh-venv" -}}
{{- range $name := .ModelopsMode.matches -}}
{{- if has $name $diagnosis -}}
{{- $errors = append $errors (printf "worker.autoscaling.enabled=true with the %s mode: the diagnosis modes (%s) are compared run against run on a fixed layout of pods and processes, and a pod count that follows the backlog changes that layout during a run. Fix the count with worker.replicas and worker.autoscaling.enabled=false, or autoscale prod-warm or fresh-process." $name (join ", " $diagnosis)) -}}
{{- end -}}
{{- end -}}
{{- $routesVar := include "modelops-dask.schedulerRoutesVar" . -}}
{{- range .Values.scheduler.extraEnv -}}
{{- if eq .name $routesVar -}}
{{- $errors = append $errors (printf "scheduler.extraEnv sets %s, which the chart renders with worker.autoscaling.enabled=true (Dask's default routes plus distributed.http.scheduler.api, where KEDA reads /api/v1/adaptive_target). Remove it from scheduler.extraEnv." $routesVar) -}}
{{- end -}}
{{- end -}}
{{- if has "--no-dashboard" (.Values.scheduler.extraArgs | default list) -}}
{{- $errors = append $errors "scheduler.extraArgs contains --no-dashboard, but worker.autoscaling.enabled=true reads the scheduler's adaptive target on its dashboard port (8787). Remove --no-dashboard, or set worker.autoscaling.enabled=false." -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}
