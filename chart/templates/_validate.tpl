{{/*
Render-time validation: every refusal the schema cannot express (combinations of values,
values Kubernetes or the runtime would refuse later). One `define` per concern, all called
from modelops-dask.validateValues, which worker-deployment.yaml includes once at its top:
a `fail` anywhere aborts the whole render, so no object is ever rendered half-checked.

Each message says what was wrong, what is allowed and what to set instead.
Add a new concern as its own `define` below and call it from modelops-dask.validateValues.
*/}}

{{/* Why a block with a default can be missing, and the way out. */}}
{{- define "modelops-dask.missingDefaultHint" -}}
If the release was upgraded from an older chart version with --reuse-values, helm kept the old chart's defaults, which lack this value: upgrade with --reset-then-reuse-values instead.
{{- end -}}

{{- define "modelops-dask.validateValues" -}}
{{- include "modelops-dask.validate.legacyKeys" . -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- include "modelops-dask.validate.memory" . -}}
{{- include "modelops-dask.validate.workerEnv" . -}}
{{- include "modelops-dask.validate.workerArgs" . -}}
{{- include "modelops-dask.validate.executor" . -}}
{{- include "modelops-dask.validate.cacheBudgets" . -}}
{{- include "modelops-dask.validate.bundles" . -}}
{{- include "modelops-dask.validate.workerResources" . -}}
{{- include "modelops-dask.validate.securityContext" . -}}
{{- include "modelops-dask.validate.serviceAccount" . -}}
{{- include "modelops-dask.validate.strategy" . -}}
{{- include "modelops-dask.validate.probes" . -}}
{{- include "modelops-dask.validate.volumes" . -}}
{{- include "modelops-dask.validate.schedulerService" . -}}
{{- include "modelops-dask.validate.ingress" . -}}
{{- include "modelops-dask.validate.topologySpread" . -}}
{{- include "modelops-dask.validate.requestsWithinLimits" . -}}
{{- include "modelops-dask.validate.scheduling" . -}}
{{- include "modelops-dask.validate.podSecurity" . -}}
{{- include "modelops-dask.validate.monitors" . -}}
{{- end -}}

{{/*
Keys of the dask/helm-chart (and executor keys one level too high). values.schema.json
admits exactly these (definitions.legacy) so that this message, not "additional
properties not allowed", is what the user sees.
*/}}
{{- define "modelops-dask.validate.legacyKeys" -}}
{{- $where := dict
  "" (dict
    "workers" "worker (worker.replicas, worker.processes, worker.threads, worker.resources, ...)"
    "webUI" "scheduler.ingress (an Ingress for the dashboard) or scheduler.service"
    "jupyter" "nothing: this chart runs no Jupyter server; connect your own client to the scheduler (NOTES.txt, Connect)")
  "worker" (dict
    "env" "worker.extraEnv (a Kubernetes EnvVar list)"
    "mounts" "worker.extraVolumes (a Volume list) and worker.extraVolumeMounts (a VolumeMount list)"
    "threads_per_worker" "worker.threads"
    "nprocs" "worker.processes"
    "default_resources" "worker.resources (unset keys are derived from the mode)"
    "image" "image (image.repository, image.tag, image.digest: one image for every pod)"
    "type" "worker.executor.type"
    "maxWarmProcesses" "worker.executor.maxWarmProcesses"
    "forceFreshVenv" "worker.executor.forceFreshVenv"
    "validateDeps" "worker.executor.validateDeps"
    "maxProcessReuse" "worker.executor.maxProcessReuse"
    "processTTL" "worker.executor.processTTL"
    "memLimitPerProcess" "worker.executor.memLimitPerProcess"
    "poolMemoryPerProcess" "worker.executor.poolMemoryPerProcess"
    "taskTimeout" "worker.executor.taskTimeout"
    "envPassthrough" "worker.executor.envPassthrough")
  "scheduler" (dict
    "env" "scheduler.extraEnv (a Kubernetes EnvVar list)"
    "image" "image (image.repository, image.tag, image.digest: one image for every pod)"
    "serviceType" "scheduler.service.type")
-}}
{{- range $block, $keys := $where -}}
{{- $values := ternary $.Values (index $.Values $block | default dict) (eq $block "") -}}
{{- range $key, $instead := $keys -}}
{{- if hasKey $values $key -}}
{{- $path := ternary $key (printf "%s.%s" $block $key) (eq $block "") -}}
{{- fail (printf "%s is not a value of this chart (it is a dask/helm-chart key, or one that lives elsewhere here): set %s instead, and remove %s." $path $instead $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Memory values: Kubernetes quantities that dask (--memory-limit) and the runtime
(MODELOPS_*_BYTES) read as well, i.e. a number with Ki Mi Gi Ti or k M G T, or a plain byte
count; more than zero. Said in words, because the schema's pattern message would not.
*/}}
{{- define "modelops-dask.validate.memory" -}}
{{- $w := .Values.worker -}}
{{- $x := $w.executor -}}
{{- $checks := list
  (list "worker.memoryPerProcess" $w.memoryPerProcess)
  (list "worker.memoryOverhead" $w.memoryOverhead)
  (list "worker.executor.poolMemoryPerProcess" $x.poolMemoryPerProcess) -}}
{{- if not (kindIs "invalid" $x.memLimitPerProcess) -}}
{{- $checks = append $checks (list "worker.executor.memLimitPerProcess" $x.memLimitPerProcess) -}}
{{- end -}}
{{- range $budget := list "venvsBudget" "uvCacheBudget" "bundlesBudget" -}}
{{- $value := index ($w.cache | default dict) $budget -}}
{{- if not (kindIs "invalid" $value) -}}
{{- $checks = append $checks (list (printf "worker.cache.%s" $budget) $value) -}}
{{- end -}}
{{- end -}}
{{- $explicit := $w.resources | default dict -}}
{{- range $kind := list "requests" "limits" -}}
{{- $list := index $explicit $kind | default dict -}}
{{- if hasKey $list "memory" -}}
{{- $checks = append $checks (list (printf "worker.resources.%s.memory" $kind) $list.memory) -}}
{{- end -}}
{{- end -}}
{{- range $checks -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 -}}
{{- if not (and (kindIs "string" $value) (regexMatch "^[0-9]+(\\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$" $value)) -}}
{{- fail (printf "%s=%v is not a memory quantity this chart can use. Write a number followed by one of Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), as a string, e.g. 1536Mi, 1.5Gi or 2G; or a plain byte count in quotes, e.g. \"1073741824\". (Kubernetes' m, P, E and exponent forms are refused: dask or the runtime would not read them.)" $name $value) -}}
{{- end -}}
{{- if eq (include "modelops-dask.mebibytes" $value) "0" -}}
{{- fail (printf "%s=%s is zero: it must be more than 0 (e.g. 512Mi)." $name $value) -}}
{{- end -}}
{{- end -}}
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
-}}
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
{{- fail (printf "worker.cache.%s=%v (%.0f bytes) is not below worker.cache.%s=%v (%.0f bytes), the sizeLimit of the %s emptyDir (%s): the kubelet evicts the worker pod once the volume holds more than its limit, while the cache is cleaned only when it grows past its budget, so the pod would be evicted before any cleanup. Set worker.cache.%s below worker.cache.%s with room to spare (the defaults: %s), or raise worker.cache.%s." .budget $budget $budgetBytes .limit $limit $limitBytes .volume .holds .budget .limit .default .limit) -}}
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
{{- fail (printf "worker.cache.venvsBudget=%v plus worker.cache.uvCacheBudget=%v (%.0f bytes together) is not below worker.cache.venvsSizeLimit=%v (%.0f bytes), the sizeLimit of the venv-cache emptyDir that holds both the venvs and uv's cache: each cache is cleaned only when it grows past its own budget, so both may be full at once, and the kubelet evicts the worker pod once the volume holds more than its limit. Lower worker.cache.venvsBudget or worker.cache.uvCacheBudget so that their sum is below worker.cache.venvsSizeLimit with room to spare (the defaults: %s), or raise worker.cache.venvsSizeLimit." $venvs $uv $sum $limit $limitBytes $venvDefaults) -}}
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

{{/*
The kubelet refuses to start a container whose effective runAsUser is 0 while
runAsNonRoot is true ("container's runAsUser breaks non-root policy"): the pod would stay in
CreateContainerConfigError. The effective value is the container's, else the pod's.
*/}}
{{- define "modelops-dask.validate.securityContext" -}}
{{- $components := list "scheduler" "worker" -}}
{{- if .Values.tests.enabled }}{{ $components = append $components "test" }}{{ end -}}
{{- range $component := $components -}}
{{- $sel := dict "ctx" $ "component" $component -}}
{{- $pod := include "modelops-dask.podSecurityContext" $sel | fromYaml -}}
{{- $ctr := include "modelops-dask.containerSecurityContext" $sel | fromYaml -}}
{{- $nonRoot := ternary $ctr.runAsNonRoot $pod.runAsNonRoot (hasKey $ctr "runAsNonRoot") -}}
{{- $user := ternary $ctr.runAsUser $pod.runAsUser (hasKey $ctr "runAsUser") -}}
{{- if and $nonRoot (not (kindIs "invalid" $user)) (eq (int64 $user) 0) -}}
{{- fail (printf "the %s pod would run as root (runAsUser: 0) with runAsNonRoot: true: the kubelet refuses to start such a container (CreateContainerConfigError). Set runAsUser to a non-zero uid (the image's user is 10001), or, if you really want root, set runAsNonRoot: false too (podSecurityContext / containerSecurityContext, or their worker.* and scheduler.* overrides)." $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.validate.serviceAccount" -}}
{{- $sa := .Values.serviceAccount | default dict -}}
{{- if and $sa.annotations (not $sa.create) -}}
{{- fail "serviceAccount.annotations are set but serviceAccount.create=false: the chart puts them only on a ServiceAccount it creates. Set serviceAccount.create: true, or annotate your own account and name it in serviceAccount.name." -}}
{{- end -}}
{{- end -}}

{{/* What the API server refuses in a DeploymentStrategy. */}}
{{- define "modelops-dask.validate.strategy" -}}
{{- $s := .Values.worker.strategy | default dict -}}
{{- if not $s.type -}}
{{- fail (printf "worker.strategy has no type: set worker.strategy.type to Recreate (the chart's default: a mode switch never mixes old-mode and new-mode workers) or RollingUpdate. %s" (include "modelops-dask.missingDefaultHint" .)) -}}
{{- end -}}
{{- if and (eq $s.type "Recreate") $s.rollingUpdate -}}
{{- fail "worker.strategy.rollingUpdate is set but worker.strategy.type=Recreate: Kubernetes refuses rollingUpdate with Recreate. Remove rollingUpdate, or set type: RollingUpdate." -}}
{{- end -}}
{{- if eq $s.type "RollingUpdate" -}}
{{- $ru := $s.rollingUpdate | default dict -}}
{{- $surge := toString (ternary $ru.maxSurge "25%" (hasKey $ru "maxSurge")) -}}
{{- $unavailable := toString (ternary $ru.maxUnavailable "25%" (hasKey $ru "maxUnavailable")) -}}
{{- if and (regexMatch "^0%?$" $surge) (regexMatch "^0%?$" $unavailable) -}}
{{- fail "worker.strategy.rollingUpdate has maxSurge and maxUnavailable both 0: Kubernetes refuses it (the rollout could never make progress). Allow at least one extra pod (maxSurge: 1) or one missing pod (maxUnavailable: 1)." -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
What the API server refuses in a Probe; and a probe block that is missing altogether (null,
or a --reuse-values upgrade from a chart version without it), which would silently drop
the probe: `enabled: false` is the way to turn one off.
*/}}
{{- define "modelops-dask.validate.probes" -}}
{{- range $component := list "scheduler" "worker" -}}
{{- $values := index $.Values $component | default dict -}}
{{- range $probe := list "readinessProbe" "livenessProbe" -}}
{{- if not (index $values $probe) -}}
{{- fail (printf "%s.%s is missing (null): to turn the probe off set %s.%s.enabled: false. %s" $component $probe $component $probe (include "modelops-dask.missingDefaultHint" $)) -}}
{{- end -}}
{{- end -}}
{{- with $values.livenessProbe -}}
{{- if and (hasKey . "successThreshold") (ne (int64 .successThreshold) 1) -}}
{{- fail (printf "%s.livenessProbe.successThreshold=%v: Kubernetes requires 1 for a liveness probe. Remove it or set 1." $component .successThreshold) -}}
{{- end -}}
{{- end -}}
{{- with $values.readinessProbe -}}
{{- if hasKey . "terminationGracePeriodSeconds" -}}
{{- fail (printf "%s.readinessProbe.terminationGracePeriodSeconds is set: Kubernetes allows it only on liveness (and startup) probes. Remove it, or set it on %s.livenessProbe." $component $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Extra volumes and mounts: unique volume names, not the chart's own; every mount names a
volume of the pod; no mount at a path the chart mounts (all refused by the API server, or
silently shadowing the caches).
*/}}
{{- define "modelops-dask.validate.volumes" -}}
{{- $cacheRoot := include "modelops-dask.cacheRoot" . -}}
{{- $workerPaths := dict "/tmp" "the writable /tmp" (printf "%s/bundles" $cacheRoot) "the bundle cache" (printf "%s/envs" $cacheRoot) "the venv cache" -}}
{{- $workerVolumes := list "tmp" "bundle-cache" "venv-cache" -}}
{{- if .Values.bundles.volume -}}
{{- $workerVolumes = append $workerVolumes "bundle-repo" -}}
{{- $_ := set $workerPaths .Values.bundles.repo "the bundle repository (bundles.volume)" -}}
{{- end -}}
{{- $specs := dict
  "worker" (dict "volumes" $workerVolumes "paths" $workerPaths)
  "scheduler" (dict "volumes" (list "tmp") "paths" (dict "/tmp" "the writable /tmp")) -}}
{{- range $component, $spec := $specs -}}
{{- $values := index $.Values $component -}}
{{- $names := $spec.volumes -}}
{{- range $values.extraVolumes -}}
{{- if has .name $names -}}
{{- fail (printf "%s.extraVolumes has a second volume named %q (the chart's own volumes are %s): Kubernetes refuses duplicate volume names. Rename it." $component .name (join ", " $spec.volumes)) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $paths := dict -}}
{{- range $mount := $values.extraVolumeMounts -}}
{{- if not (has .name $names) -}}
{{- fail (printf "%s.extraVolumeMounts mounts volume %q, which the pod does not have: add it to %s.extraVolumes (volumes: %s)." $component .name $component (join ", " $names)) -}}
{{- end -}}
{{- $path := .mountPath | default "" | trimSuffix "/" -}}
{{- if not (hasPrefix "/" $path) -}}
{{- fail (printf "%s.extraVolumeMounts entry %q needs an absolute mountPath (got %q)." $component .name (.mountPath | default "")) -}}
{{- end -}}
{{- with get $spec.paths $path -}}
{{- fail (printf "%s.extraVolumeMounts mounts %q at %s, where the chart mounts %s: Kubernetes refuses two mounts at one path. Choose another mountPath." $component $mount.name $path .) -}}
{{- end -}}
{{- if hasKey $paths $path -}}
{{- fail (printf "%s.extraVolumeMounts mounts two volumes at %s: Kubernetes refuses two mounts at one path." $component $path) -}}
{{- end -}}
{{- $_ := set $paths $path true -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* LoadBalancer-only fields of the scheduler Service. */}}
{{- define "modelops-dask.validate.schedulerService" -}}
{{- $svc := .Values.scheduler.service | default dict -}}
{{- if ne $svc.type "LoadBalancer" -}}
{{- range $key := list "loadBalancerIP" "loadBalancerSourceRanges" -}}
{{- if index $svc $key -}}
{{- fail (printf "scheduler.service.%s is set but scheduler.service.type=%s: Kubernetes accepts it only for type LoadBalancer. Set scheduler.service.type: LoadBalancer, or remove %s." $key $svc.type $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $svc.loadBalancerSourceRanges -}}
{{- if not (regexMatch "^([0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]+/[0-9]{1,3})$" .) -}}
{{- fail (printf "scheduler.service.loadBalancerSourceRanges has %q, which is not a CIDR: write networks such as 10.0.0.0/8 or 2001:db8::/32." .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Ingress hosts the API server accepts: DNS names (a leading "*." allowed), not IPs. */}}
{{- define "modelops-dask.validate.ingress" -}}
{{- $ing := .Values.scheduler.ingress | default dict -}}
{{- if $ing.enabled -}}
{{- $dns := "^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" -}}
{{- range $host := $ing.hosts -}}
{{- if or (not (regexMatch $dns $host)) (regexMatch "^[0-9.]+$" $host) -}}
{{- fail (printf "scheduler.ingress.hosts has %q, which Kubernetes refuses as an Ingress host: write a lower-case DNS name such as dask.example.com (a leading *. wildcard is allowed; no scheme, port, path or IP address; the path goes in scheduler.ingress.path)." $host) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The API server refuses two constraints with the same topologyKey and whenUnsatisfiable. */}}
{{- define "modelops-dask.validate.topologySpread" -}}
{{- $seen := dict -}}
{{- range .Values.worker.topologySpreadConstraints -}}
{{- $pair := printf "%s/%s" .topologyKey .whenUnsatisfiable -}}
{{- if hasKey $seen $pair -}}
{{- fail (printf "worker.topologySpreadConstraints has two constraints with topologyKey %s and whenUnsatisfiable %s: Kubernetes refuses the duplicate. Merge them into one (the chart's default is kubernetes.io/hostname with ScheduleAnyway; a list you set replaces it)." .topologyKey .whenUnsatisfiable) -}}
{{- end -}}
{{- $_ := set $seen $pair true -}}
{{- end -}}
{{- end -}}

{{/*
A Kubernetes quantity as the schema admits it (2, 0.5, "250m", "1Gi", "500M") → a float64 in
base units (cores, bytes), to compare a request with its limit whatever their suffixes.
*/}}
{{- define "modelops-dask.quantity" -}}
{{- $s := toString . -}}
{{- $suffix := regexFind "[A-Za-z]+$" $s -}}
{{- $factor := get (dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0) $suffix -}}
{{- mulf (float64 (trimSuffix $suffix $s)) $factor -}}
{{- end -}}

{{/*
No request above its limit, for every resource of both containers (the API server refuses
the Deployment: "must be less than or equal to ... limit"; helm has then sent the objects
before it). The worker's are checked as rendered, derived memory and cpu included.
*/}}
{{- define "modelops-dask.validate.requestsWithinLimits" -}}
{{- $worker := include "modelops-dask.workerResources" . | fromYaml -}}
{{- range $who, $res := dict "scheduler" (.Values.scheduler.resources | default dict) "worker" $worker -}}
{{- $limits := $res.limits | default dict -}}
{{- range $name, $request := ($res.requests | default dict) -}}
{{- if hasKey $limits $name -}}
{{- $limit := get $limits $name -}}
{{- if gt (include "modelops-dask.quantity" $request | float64) (include "modelops-dask.quantity" $limit | float64) -}}
{{- fail (printf "%s.resources.requests.%s (%v) is above %s.resources.limits.%s (%v): Kubernetes refuses a container whose request exceeds its limit. Lower the request or raise the limit." $who $name $request $who $name $limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Tolerations and node selectors go to the pods as they are: refuse what the API server would
refuse, and a misspelt toleration field, which it only drops with a warning (the pods then
tolerate something else than meant).
*/}}
{{- define "modelops-dask.validate.scheduling" -}}
{{- $fields := list "key" "operator" "value" "effect" "tolerationSeconds" -}}
{{- $effects := list "NoSchedule" "PreferNoSchedule" "NoExecute" -}}
{{- $name := "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$" -}}
{{- $prefix := "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" -}}
{{- range $who := list "scheduler" "worker" -}}
{{- $values := index $.Values $who -}}
{{- range $i, $t := $values.tolerations -}}
{{- $at := printf "%s.tolerations[%d]" $who $i -}}
{{- range $field, $_ := $t -}}
{{- if not (has $field $fields) -}}
{{- fail (printf "%s has an unknown field %q: a toleration has only %s (Kubernetes would drop %q with a warning, and the pods would not tolerate what you meant). Fix the field name." $at $field (join ", " $fields) $field) -}}
{{- end -}}
{{- end -}}
{{- $op := $t.operator | default "Equal" -}}
{{- if not (has $op (list "Equal" "Exists")) -}}
{{- fail (printf "%s has operator %q: allowed are Equal (the default) and Exists." $at $op) -}}
{{- end -}}
{{- if and (eq $op "Exists") (not (empty $t.value)) -}}
{{- fail (printf "%s has operator Exists and a value (%q): Exists matches every value of the key and Kubernetes refuses a value with it. Remove the value, or use operator Equal." $at (toString $t.value)) -}}
{{- end -}}
{{- if and (empty $t.key) (ne $op "Exists") -}}
{{- fail (printf "%s has no key: only operator Exists may leave it empty (to tolerate every taint). Set a key, or operator: Exists." $at) -}}
{{- end -}}
{{- if and $t.effect (not (has $t.effect $effects)) -}}
{{- fail (printf "%s has effect %q: allowed are %s (or none: all effects)." $at $t.effect (join ", " $effects)) -}}
{{- end -}}
{{- if and (hasKey $t "tolerationSeconds") (ne ($t.effect | default "") "NoExecute") -}}
{{- fail (printf "%s sets tolerationSeconds without effect NoExecute: Kubernetes allows it only with NoExecute. Set effect: NoExecute, or remove tolerationSeconds." $at) -}}
{{- end -}}
{{- end -}}
{{- range $key, $value := $values.nodeSelector -}}
{{- $parts := splitList "/" $key -}}
{{- $p := ternary (first $parts) "" (eq (len $parts) 2) -}}
{{- if or (gt (len $parts) 2) (not (regexMatch $name (last $parts))) (and (eq (len $parts) 2) (or (not (regexMatch $prefix $p)) (gt (len $p) 253))) -}}
{{- fail (printf "%s.nodeSelector key %q is not a Kubernetes label key: [prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit, the optional prefix a DNS subdomain (e.g. node.kubernetes.io/instance-type). Use the label key your nodes have." $who $key) -}}
{{- end -}}
{{- if not (regexMatch "^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$" (toString $value)) -}}
{{- fail (printf "%s.nodeSelector[%q]=%q is not a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit (or empty)." $who $key (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Privilege escalation: Pod Security refuses it in every pod (`baseline` refuses privileged
containers, `restricted` also requires allowPrivilegeEscalation: false). The API server
only warns about a Deployment's template: helm reports the release deployed, then every pod
creation of the ReplicaSets is refused. (Root, added capabilities and the seccomp profile
remain yours to choose: see validate.securityContext and the NOTES warnings.)
*/}}
{{- define "modelops-dask.validate.podSecurity" -}}
{{- $components := list "scheduler" "worker" -}}
{{- if .Values.tests.enabled }}{{ $components = append $components "test" }}{{ end -}}
{{- range $component := $components -}}
{{- $ctr := include "modelops-dask.containerSecurityContext" (dict "ctx" $ "component" $component) | fromYaml -}}
{{- $why := printf "the %s pods would be refused by Pod Security (helm would report the release deployed, then every pod creation fails)" $component -}}
{{- if ne (toString $ctr.allowPrivilegeEscalation) "false" -}}
{{- fail (printf "containerSecurityContext.allowPrivilegeEscalation=%v: %s; it must be false. Remove your override (the chart's default is false), also in scheduler/worker.containerSecurityContext." $ctr.allowPrivilegeEscalation $why) -}}
{{- end -}}
{{- if $ctr.privileged -}}
{{- fail (printf "containerSecurityContext.privileged=true: %s; privileged containers are not allowed. Remove it." $why) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
PodMonitor and ServiceMonitor are Prometheus Operator custom resources: without their CRD
the API server answers only "no matches for kind" once helm has rendered everything.
*/}}
{{- define "modelops-dask.validate.monitors" -}}
{{- range $kind, $value := dict "PodMonitor" "podMonitor" "ServiceMonitor" "serviceMonitor" -}}
{{- $block := index ($.Values.metrics | default dict) $value | default dict -}}
{{- if and $block.enabled (not ($.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind))) -}}
{{- fail (printf "metrics.%s.enabled=true needs the %s CRD (monitoring.coreos.com/v1, from the Prometheus Operator), which this cluster does not serve. Install the Prometheus Operator (or its CRDs) first, or set metrics.%s.enabled=false and rely on metrics.scrapeAnnotations. (helm template knows no cluster: pass --api-versions monitoring.coreos.com/v1/%s.)" $value $kind $value $kind) -}}
{{- end -}}
{{- end -}}
{{- end -}}
