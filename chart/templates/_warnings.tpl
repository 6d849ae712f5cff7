{{/*
Legal but surely unintended: NOTES.txt prints each of these as a `WARNING:` line (the
render goes on; refusals are in _validate*.tpl). JSON list of strings.
*/}}

{{/* Pod memory above this (Mi) fits few nodes: the pods may stay Pending. */}}
{{- define "modelops-dask.hugePodMi" -}}131072{{- end -}}

{{- define "modelops-dask.warnings" -}}
{{- include "modelops-dask.resolveMode" . -}}
{{- $w := .Values.worker -}}
{{- $x := $w.executor -}}
{{- $mode := .ModelopsMode -}}
{{- $warnings := list -}}
{{- /* ---- the mode: explicit mode keys that turn `mode` into something else ---------- */}}
{{- $explicit := join ", " $mode.explicit -}}
{{- if not $mode.matches -}}
{{- $warnings = append $warnings (printf "the effective mode matches no preset: mode=%s, but %s set explicitly (explicit mode keys win over mode). If you did not mean to mix modes (e.g. a preset file passed with -f before your own values), remove those keys: helm upgrade %s <chart> --reset-values -f my-values.yaml --set mode=%s." $mode.name $explicit .Release.Name $mode.name) -}}
{{- else if not (has $mode.name $mode.matches) -}}
{{- $warnings = append $warnings (printf "mode=%s, but the effective mode is the %s preset: %s set explicitly (explicit mode keys win over mode; e.g. an earlier -f values-examples/ file kept by --reuse-values). To get %s, remove them: helm upgrade %s <chart> --reset-values -f my-values.yaml --set mode=%s." $mode.name (join "/" $mode.matches) $explicit $mode.name .Release.Name $mode.name) -}}
{{- end -}}
{{- /* ---- a pod bigger than most nodes ---------------------------------------------- */}}
{{- $mem := include "modelops-dask.workerMemory" . | fromJson -}}
{{- $limit := (($w.resources | default dict).limits | default dict).memory -}}
{{- $podMi := $mem.mi | int64 -}}
{{- with $limit }}{{ $podMi = include "modelops-dask.mebibytes" . | atoi | int64 }}{{ end -}}
{{- if gt $podMi (include "modelops-dask.hugePodMi" . | atoi | int64) -}}
{{- $warnings = append $warnings (printf "each worker pod asks for %dMi (%.1f GiB) of memory (%s): few nodes have that much, so the pods may stay Pending. If that is not what you meant, lower worker.processes, worker.memoryPerProcess or worker.executor.poolMemoryPerProcess (the warm pool's budget per Dask worker process)." $podMi (divf $podMi 1024) $mem.formula) -}}
{{- end -}}
{{- /* ---- direct runs one task at a time per process: threads only reserve CPUs -------- */}}
{{- if and (eq $x.type "direct") (gt (int64 $w.threads) 1) -}}
{{- $processes := int64 $w.processes -}}
{{- $warnings = append $warnings (printf "worker.executor.type=direct runs one task at a time per Dask worker process, but worker.threads=%d: each pod requests %d CPUs (processes × threads) of which at most %d are busy. Set worker.threads: 1 (as the debug presets do), or use isolated_warm to run tasks in parallel." (int64 $w.threads) (mul $processes (int64 $w.threads)) $processes) -}}
{{- end -}}
{{- /* ---- root in the worker: bundle code is user code ---------------------------- */}}
{{- $sel := dict "ctx" $ "component" "worker" -}}
{{- $pod := include "modelops-dask.podSecurityContext" $sel | fromYaml -}}
{{- $ctr := include "modelops-dask.containerSecurityContext" $sel | fromYaml -}}
{{- $user := ternary $ctr.runAsUser $pod.runAsUser (hasKey $ctr "runAsUser") -}}
{{- if and (not (kindIs "invalid" $user)) (eq (int64 $user) 0) -}}
{{- $warnings = append $warnings "the worker pods run as root (runAsUser: 0): bundle code, which is user code, runs as root in the container. The image's own user is 10001 (the chart's default); remove the override unless you need root." -}}
{{- end -}}
{{- /* ---- an Ingress the NetworkPolicy keeps out ------------------------------------ */}}
{{- if and (.Values.scheduler.ingress | default dict).enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.clientFrom) -}}
{{- $warnings = append $warnings "scheduler.ingress is enabled, but networkPolicy.enabled admits no client to the scheduler (networkPolicy.clientFrom is empty): the ingress controller cannot reach the dashboard. Add its namespace to networkPolicy.clientFrom, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]." -}}
{{- end -}}
{{- /* ---- the Ingress also serves the api routes autoscaling publishes ------------- */}}
{{- if and (.Values.scheduler.ingress | default dict).enabled (include "modelops-dask.autoscaling" .) -}}
{{- $warnings = append $warnings "scheduler.ingress is enabled and worker.autoscaling publishes Dask's /api/v1 routes on the dashboard port, which include POST /api/v1/retire_workers (it retires workers, with no authentication): the Ingress serves them too. Put your controller's authentication in front (scheduler.ingress.annotations), or block /api/v1 there; KEDA reads the target inside the cluster, not through the Ingress." -}}
{{- end -}}
{{- toJson $warnings -}}
{{- end -}}
