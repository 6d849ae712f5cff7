{{/*
Names and labels, the quantity helpers (mebibytes, millicores, quantity: the arithmetic
shared by the worker Deployment, NOTES.txt and the _validate*.tpl checks), and the worker
container's derived env and resources. Render-time refusals are in _validate*.tpl.
*/}}

{{- define "modelops-dask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource-name prefix; 40 characters leave room for "-scheduler" and pod suffixes. */}}
{{- define "modelops-dask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modelops-dask.scheduler" -}}
{{- include "modelops-dask.fullname" . }}-scheduler
{{- end -}}

{{- define "modelops-dask.worker" -}}
{{- include "modelops-dask.fullname" . }}-worker
{{- end -}}

{{/* Selector labels: release identity only, never the mode, so that helm upgrade between
modes never touches the immutable Deployment selectors. Call with (dict "ctx" $ "component" "worker"). */}}
{{- define "modelops-dask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelops-dask.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "modelops-dask.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modelops-dask.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: modelops-dask
{{- end -}}

{{/* repository@digest when image.digest is set (the tag is then ignored), else repository:tag. */}}
{{- define "modelops-dask.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The workers' ServiceAccount: the created one, a named existing one, or "" (default). */}}
{{- define "modelops-dask.serviceAccountName" -}}
{{- $sa := .Values.serviceAccount | default dict -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "modelops-dask.worker" .) -}}
{{- else -}}
{{- $sa.name -}}
{{- end -}}
{{- end -}}

{{/*
Security contexts of a component (YAML map): the global podSecurityContext /
containerSecurityContext with the component's own values merged over them key by key.
Call with (dict "ctx" $ "component" "worker"|"scheduler"|"test"); the helm test pod has
no overrides.
*/}}
{{- define "modelops-dask.podSecurityContext" -}}
{{- $own := (index .ctx.Values .component | default dict).podSecurityContext | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy (.ctx.Values.podSecurityContext | default dict)) (deepCopy $own)) -}}
{{- end -}}

{{- define "modelops-dask.containerSecurityContext" -}}
{{- $own := (index .ctx.Values .component | default dict).containerSecurityContext | default dict -}}
{{- toYaml (mergeOverwrite (deepCopy (.ctx.Values.containerSecurityContext | default dict)) (deepCopy $own)) -}}
{{- end -}}

{{/*
A probe of a component's dashboard port: the chart's HTTP GET /health plus the timing
fields of the values (`enabled: false` renders nothing). Call with (dict "probe" <values>).
*/}}
{{- define "modelops-dask.probe" -}}
{{- $probe := omit (.probe | default dict) "enabled" -}}
{{- toYaml (merge (dict "httpGet" (dict "path" "/health" "port" "dashboard")) $probe) -}}
{{- end -}}

{{/*
Memory quantity → mebibytes, rounded up. Accepts what the schema's definitions.memory admits:
a number with Ki Mi Gi Ti or k M G T, or a plain byte count ("1536Mi", "1.5Gi", "2G").
Whole Mi and Gi values are exact; others round up to the next Mi.
*/}}
{{- define "modelops-dask.mebibytes" -}}
{{- $s := toString . -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $s -}}
{{- $unit := trimPrefix $number $s -}}
{{- $bytes := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- ceil (divf (mulf (float64 $number) (get $bytes $unit)) 1048576) | int64 -}}
{{- end -}}

{{/* CPU quantity (2, 0.5, "2", "500m": the schema's forms) → whole millicores. */}}
{{- define "modelops-dask.millicores" -}}
{{- $s := toString . -}}
{{- if hasSuffix "m" $s -}}
{{- trimSuffix "m" $s | atoi -}}
{{- else -}}
{{- round (mulf (float64 $s) 1000) 0 | int64 -}}
{{- end -}}
{{- end -}}

{{/*
Memory one worker pod needs, as JSON {"mi": N, "formula": "..."}:
  processes × (memoryPerProcess + warm-pool budget per process) + memoryOverhead,
where the warm-pool budget is executor.poolMemoryPerProcess for isolated_warm and 0 for
direct (direct runs tasks inside the Dask worker process, covered by memoryPerProcess).
*/}}
{{- define "modelops-dask.workerMemory" -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- $w := .Values.worker -}}
{{- $processes := int64 $w.processes -}}
{{- $perProcess := include "modelops-dask.mebibytes" $w.memoryPerProcess | atoi -}}
{{- $overhead := include "modelops-dask.mebibytes" $w.memoryOverhead | atoi -}}
{{- $pool := 0 -}}
{{- if eq $w.executor.type "isolated_warm" -}}
{{- $pool = include "modelops-dask.mebibytes" $w.executor.poolMemoryPerProcess | atoi -}}
{{- end -}}
{{- $total := add (mul $processes (add $perProcess $pool)) $overhead -}}
{{- $poolText := printf "%dMi poolMemoryPerProcess" $pool -}}
{{- if ne $w.executor.type "isolated_warm" }}{{ $poolText = "0Mi warm pool (direct)" }}{{ end -}}
{{- $formula := printf "%d processes × (%dMi memoryPerProcess + %s) + %dMi memoryOverhead = %dMi" $processes $perProcess $poolText $overhead $total -}}
{{- dict "mi" $total "formula" $formula | toJson -}}
{{- end -}}

{{/* The thread-count variables of native libraries that worker.executor.nativeThreads sets
(the runtime's modelops_runtime.worker.native.THREAD_VARS; a test keeps them equal). */}}
{{- define "modelops-dask.nativeThreadVars" -}}
BLIS_NUM_THREADS MKL_NUM_THREADS NUMBA_NUM_THREADS NUMEXPR_MAX_THREADS NUMEXPR_NUM_THREADS OMP_NUM_THREADS OPENBLAS_NUM_THREADS VECLIB_MAXIMUM_THREADS
{{- end -}}

{{/* Where the worker's cache volumes are mounted (the image creates these paths). */}}
{{- define "modelops-dask.cacheRoot" -}}
/var/cache/modelops
{{- end -}}

{{/*
The worker container's env: the runtime's MODELOPS_* variables rendered from typed values
(sorted by name; unset optional values are left out), then worker.extraEnv. YAML list items.
*/}}
{{/*
Worker pods' terminationGracePeriodSeconds: the value when set; else derived from the task
timeout: SIGTERM retires the pod's workers through the scheduler (worker/hooks/retire.py),
running tasks get up to taskTimeout (30 s without one) to finish, then 30 s to hand over
results, + 10 s to close: taskTimeout + 40 (70 without a task timeout).
*/}}
{{- define "modelops-dask.workerGracePeriod" -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- $w := .Values.worker -}}
{{- if not (kindIs "invalid" $w.terminationGracePeriodSeconds) -}}
{{- int64 $w.terminationGracePeriodSeconds -}}
{{- else if not (kindIs "invalid" $w.executor.taskTimeout) -}}
{{- add (int64 $w.executor.taskTimeout) 40 -}}
{{- else -}}
70
{{- end -}}
{{- end -}}

{{- define "modelops-dask.workerEnv" -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- $w := .Values.worker -}}
{{- $x := $w.executor -}}
{{- $cacheRoot := include "modelops-dask.cacheRoot" . -}}
{{- $env := dict
  "MODELOPS_EXECUTOR_TYPE" $x.type
  "MODELOPS_MAX_WARM_PROCESSES" (int64 $x.maxWarmProcesses | toString)
  "MODELOPS_FORCE_FRESH_VENV" (toString $x.forceFreshVenv)
  "MODELOPS_VALIDATE_DEPS" (toString $x.validateDeps)
  "MODELOPS_ALLOW_SDIST_BUILDS" (toString $x.allowSdistBuilds)
  "MODELOPS_MAX_PROCESS_REUSE" (int64 $x.maxProcessReuse | toString)
  "MODELOPS_PROCESS_TTL" (int64 $x.processTTL | toString)
  "MODELOPS_MAX_TASK_PROCESSES" (int64 $x.maxTaskProcesses | toString)
  "MODELOPS_FRESH_PROCESS_FROM" $x.freshProcessFrom
  "MODELOPS_FRESH_VENVS_AHEAD" (int64 $x.freshVenvsAhead | toString)
  "MODELOPS_NATIVE_THREADS" (int64 $x.nativeThreads | toString)
  "MODELOPS_POOL_MEMORY_BYTES" $x.poolMemoryPerProcess
  "MODELOPS_LOG_LEVEL" $w.logLevel
  "MODELOPS_BUNDLE_REPO" .Values.bundles.repo
  "MODELOPS_BUNDLE_CACHE_DIR" (printf "%s/bundles" $cacheRoot)
  "MODELOPS_VENVS_DIR" (printf "%s/envs/venvs" $cacheRoot)
  "UV_CACHE_DIR" (printf "%s/envs/uv" $cacheRoot)
-}}
{{- with $x.memLimitPerProcess }}{{ $_ := set $env "MODELOPS_MEM_LIMIT_BYTES" . }}{{ end -}}
{{- if not (kindIs "invalid" $x.taskTimeout) }}{{ $_ := set $env "MODELOPS_TASK_TIMEOUT" (int64 $x.taskTimeout | toString) }}{{ end -}}
{{- with $x.envPassthrough }}{{ $_ := set $env "MODELOPS_ENV_PASSTHROUGH" (join "," .) }}{{ end -}}
{{- with $w.cache.venvsBudget }}{{ $_ := set $env "MODELOPS_VENVS_MAX_BYTES" . }}{{ end -}}
{{- with $w.cache.uvCacheBudget }}{{ $_ := set $env "MODELOPS_UV_CACHE_MAX_BYTES" . }}{{ end -}}
{{- with $w.cache.bundlesBudget }}{{ $_ := set $env "MODELOPS_BUNDLES_MAX_BYTES" . }}{{ end -}}
{{- with $x.writablePaths }}{{ $_ := set $env "MODELOPS_WARM_WRITABLE_PATHS" (join "," .) }}{{ end -}}
{{- $creds := .Values.bundles.credentials | default dict -}}
{{- with $creds.secretName }}{{ $_ := set $env "MODELOPS_BUNDLE_CREDENTIALS" (printf "Secret %s" .) }}{{ end -}}
{{- with $creds.endpoint }}{{ $_ := set $env "AWS_ENDPOINT_URL" . }}{{ end -}}
{{- with $creds.region }}{{ $_ := set $env "AWS_DEFAULT_REGION" . }}{{ end -}}
{{- /* native libraries size their thread pools when loaded, and `import distributed`
       loads numpy before any preload runs: the Dask worker processes must start with
       these (the nanny passes its own environment's values over its pre-spawn-environ) */ -}}
{{- range (include "modelops-dask.nativeThreadVars" . | splitList " ") }}{{ $_ := set $env . (int64 $x.nativeThreads | toString) }}{{ end -}}
{{- range $name, $value := $env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- with $w.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The worker container's resources (YAML map). Unset keys are derived: memory (requests and
limits) from the pod-memory formula, cpu = processes × threads; an explicit cpu limit caps
the derived request, an explicit memory request raises the derived limit. The explicit
values were checked by modelops-dask.validate.workerResources.
*/}}
{{- define "modelops-dask.workerResources" -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- $w := .Values.worker -}}
{{- $mem := include "modelops-dask.workerMemory" . | fromJson -}}
{{- $derivedMemory := printf "%dMi" (int64 $mem.mi) -}}
{{- $cpu := mul (int64 $w.processes) (int64 $w.threads) | toString -}}
{{- $explicit := $w.resources | default dict -}}
{{- $requests := deepCopy ($explicit.requests | default dict) -}}
{{- $limits := deepCopy ($explicit.limits | default dict) -}}
{{- if not (hasKey $limits "memory") -}}
{{- $_ := set $limits "memory" ($requests.memory | default $derivedMemory) -}}
{{- end -}}
{{- if and (hasKey $limits "cpu") (not (hasKey $requests "cpu")) -}}
{{- $_ := set $requests "cpu" $limits.cpu -}}
{{- end -}}
{{- $requests = merge $requests (dict "cpu" $cpu "memory" $derivedMemory) -}}
{{- $limits = merge $limits (dict "cpu" ($requests.cpu | toString)) -}}
requests:
  {{- toYaml $requests | nindent 2 }}
limits:
  {{- toYaml $limits | nindent 2 }}
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
