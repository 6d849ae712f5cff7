{{/*
worker.autoscaling: the worker pod count (fixed, or the autoscaler's), the URL KEDA reads
the scheduler's adaptive target from, and the scheduler's HTTP routes that publish it. The
ScaledObject is autoscaling.yaml; its refusals are modelops-dask.validate.autoscaling
(_validate_worker.tpl) and .keda (_validate_cluster.tpl).
*/}}

{{/* Worker pods of a fixed-size release: worker.replicas, null meaning 1. */}}
{{- define "modelops-dask.workerReplicas" -}}
{{- $r := .Values.worker.replicas -}}
{{- if kindIs "invalid" $r }}1{{ else }}{{ int64 $r }}{{ end -}}
{{- end -}}

{{/* "true" when worker.autoscaling.enabled, else "". */}}
{{- define "modelops-dask.autoscaling" -}}
{{- if ((.Values.worker.autoscaling | default dict).enabled) }}true{{ end -}}
{{- end -}}

{{/*
Where KEDA's operator (another namespace) reads the target: the scheduler Service by its
namespace-qualified name (`<svc>.<ns>.svc` resolves through the pod's DNS search path in
any cluster domain), or worker.autoscaling.schedulerURL.
*/}}
{{- define "modelops-dask.adaptiveTargetURL" -}}
{{- $base := (.Values.worker.autoscaling | default dict).schedulerURL | default "" -}}
{{- if not $base -}}
{{- $base = printf "http://%s.%s.svc:8787" (include "modelops-dask.scheduler" .) .Release.Namespace -}}
{{- end -}}
{{- printf "%s/api/v1/adaptive_target" $base -}}
{{- end -}}

{{/*
The scheduler's HTTP routes with autoscaling: Dask's defaults (distributed.yaml,
distributed.scheduler.http.routes; tests/chart keeps this list equal to the installed
Dask's) plus distributed.http.scheduler.api, the module with /api/v1/adaptive_target.
That module also serves POST /api/v1/retire_workers, so it is published only while
autoscaling needs it. Rendered as Dask's config variable, a Python literal.
*/}}
{{- define "modelops-dask.schedulerRoutesVar" -}}DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES{{- end -}}
{{- define "modelops-dask.schedulerRoutes" -}}
{{- $routes := list
  "distributed.http.scheduler.prometheus"
  "distributed.http.scheduler.info"
  "distributed.http.scheduler.json"
  "distributed.http.health"
  "distributed.http.proxy"
  "distributed.http.statics"
  "distributed.http.scheduler.api" -}}
{{- $quoted := list -}}
{{- range $routes }}{{ $quoted = append $quoted (printf "'%s'" .) }}{{ end -}}
{{- printf "[%s]" (join ", " $quoted) -}}
{{- end -}}
