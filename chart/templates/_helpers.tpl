{{/*
Named templates are kept to names and labels, plus the quantity helpers at the end
(the only arithmetic shared by the worker Deployment and NOTES.txt).
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

{{- define "modelops-dask.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
Memory quantity → whole mebibytes. The schema admits only "<n>Mi" and "<n>Gi" for the
values that enter the pod-memory formula, so this is exact integer arithmetic.
*/}}
{{- define "modelops-dask.mebibytes" -}}
{{- if hasSuffix "Gi" . -}}
{{- mul (trimSuffix "Gi" . | atoi) 1024 -}}
{{- else -}}
{{- trimSuffix "Mi" . | atoi -}}
{{- end -}}
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
