{{/*
Render-time validation: the rules values.schema.json cannot state, i.e. combinations of
values (and a few values whose explanation a schema message cannot carry). Everything about
one field alone (types, enums, patterns, ranges, unknown keys) is in values.schema.json,
which helm checks first: a schema error stops helm before any template runs, so a values
file with both kinds of mistake shows the schema's list first, then this one.

Each check is one `define` named modelops-dask.validate.<concern> that returns a JSON list
of messages (what was wrong, what is allowed, what to set instead) and never fails itself.
modelops-dask.validateValues runs them all once per render and fails once with every
message. Every template (NOTES.txt and tests/ included) includes it on its first line:
whichever helm renders first must check the values before any helper computes with them.
helm renders the deepest paths first, so values/check.yaml (nothing but the include) is
the one that runs it, and helm's message says "execution error at
(modelops-dask/templates/values/check.yaml...)" rather than naming an unrelated object. Checks by what they look at:
  _validate.tpl           the mode and keys of other charts
  _validate_worker.tpl    the worker: executor, env and args, caches, bundles, resources, strategy, autoscaling
  _validate_pods.tpl      both pods: security contexts, probes, volumes, requests, scheduling
  _validate_cluster.tpl   objects beside the pods: Service, ServiceAccount, monitors, KEDA
Add a check as its own `define` in the file of what it looks at and list it below.
*/}}

{{/* Why a block with a default can be missing, and the way out. */}}
{{/* Why a block with a default can be missing, and the way out. */}}
{{- define "modelops-dask.missingDefaultHint" -}}
If the release was upgraded from an older chart version with --reuse-values, helm kept the old chart's defaults, which lack this value: upgrade with --reset-then-reuse-values instead.
{{- end -}}

{{/*
The checks in the order their messages are listed. Those that need the resolved mode (the
worker's memory formula, the executor type) run only once the mode is known.
*/}}
{{- define "modelops-dask.validateValues" -}}
{{- if not (hasKey . "ModelopsValidated") -}}
{{- $_ := set . "ModelopsValidated" true -}}
{{- $problems := include "modelops-dask.validate.mode" . | fromJsonArray -}}
{{- $modeKnown := not $problems -}}
{{- if $modeKnown }}{{ include "modelops-dask.resolveMode" . }}{{ end -}}
{{- $needMode := list "executor" "workerResources" "requestsWithinLimits" "autoscaling" -}}
{{- $checks := list
  "legacyKeys"
  "workerEnv" "workerArgs" "executor" "cacheBudgets" "bundles" "workerResources" "strategy" "topologySpread" "autoscaling"
  "securityContext" "podSecurity" "probes" "volumes" "requestsWithinLimits" "scheduling"
  "serviceAccount" "schedulerService" "monitors" "keda" -}}
{{- range $check := $checks -}}
{{- if or $modeKnown (not (has $check $needMode)) -}}
{{- $problems = concat $problems (include (printf "modelops-dask.validate.%s" $check) $ | fromJsonArray) -}}
{{- end -}}
{{- end -}}
{{- if eq (len $problems) 1 -}}
{{- fail (first $problems) -}}
{{- else if $problems -}}
{{- $lines := list -}}
{{- range $i, $problem := $problems -}}
{{- $lines = append $lines (printf "%d. %s" (add1 $i) $problem) -}}
{{- end -}}
{{- fail (printf "the values have %d problems; fix all of them (each says how), then run again:\n%s" (len $problems) (join "\n" $lines)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
`mode` must name a shipped preset (the schema's enum says so too, but a null `mode` never
reaches the schema: helm drops null keys before checking). modelops-dask.resolveMode fails
on the same conditions, for a render that skipped this check.
*/}}
{{- define "modelops-dask.validate.mode" -}}
{{- $errors := list -}}
{{- $presets := list -}}
{{- range $path, $_ := .Files.Glob "presets/*.yaml" -}}
{{- $presets = append $presets (base $path | trimSuffix ".yaml") -}}
{{- end -}}
{{- $name := .Values.mode | default "" -}}
{{- if not $name -}}
{{- $errors = append $errors (printf "mode is not set: set it to one of %s (prod-warm is the chart's default). %s" ($presets | sortAlpha | join ", ") (include "modelops-dask.missingDefaultHint" .)) -}}
{{- else if not (has $name $presets) -}}
{{- $errors = append $errors (printf "mode=%q is not a preset of this chart. Set mode to one of: %s." $name ($presets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Keys of the dask/helm-chart (and executor keys one level too high). values.schema.json
admits exactly these (definitions.legacy) so that this message, not "additional
properties not allowed", is what the user sees.
*/}}
{{- define "modelops-dask.validate.legacyKeys" -}}
{{- $errors := list -}}
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
{{- $errors = append $errors (printf "%s is not a value of this chart (it is a dask/helm-chart key, or one that lives elsewhere here): set %s instead, and remove %s." $path $instead $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}
