{{/* Checks of the objects beside the pods: Service, ServiceAccount, monitors (see _validate.tpl). */}}

{{- define "modelops-dask.validate.serviceAccount" -}}
{{- $errors := list -}}
{{- $sa := .Values.serviceAccount | default dict -}}
{{- if and $sa.annotations (not $sa.create) -}}
{{- $errors = append $errors "serviceAccount.annotations are set but serviceAccount.create=false: the chart puts them only on a ServiceAccount it creates. Set serviceAccount.create: true, or annotate your own account and name it in serviceAccount.name." -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/* LoadBalancer-only fields of the scheduler Service (each range a CIDR: the schema's definitions.cidr). */}}
{{- define "modelops-dask.validate.schedulerService" -}}
{{- $errors := list -}}
{{- $svc := .Values.scheduler.service | default dict -}}
{{- if ne $svc.type "LoadBalancer" -}}
{{- range $key := list "loadBalancerIP" "loadBalancerSourceRanges" -}}
{{- if index $svc $key -}}
{{- $errors = append $errors (printf "scheduler.service.%s is set but scheduler.service.type=%s: Kubernetes accepts it only for type LoadBalancer. Set scheduler.service.type: LoadBalancer, or remove %s." $key $svc.type $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
PodMonitor and ServiceMonitor are Prometheus Operator custom resources: without their CRD
the API server answers only "no matches for kind" once helm has rendered everything.
*/}}
{{- define "modelops-dask.validate.monitors" -}}
{{- $errors := list -}}
{{- range $kind, $value := dict "PodMonitor" "podMonitor" "ServiceMonitor" "serviceMonitor" -}}
{{- $block := index ($.Values.metrics | default dict) $value | default dict -}}
{{- if and $block.enabled (not ($.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind))) -}}
{{- $errors = append $errors (printf "metrics.%s.enabled=true needs the %s CRD (monitoring.coreos.com/v1, from the Prometheus Operator), which this cluster does not serve. Install the Prometheus Operator (or its CRDs) first, or set metrics.%s.enabled=false and rely on metrics.scrapeAnnotations. (helm template knows no cluster: pass --api-versions monitoring.coreos.com/v1/%s.)" $value $kind $value $kind) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
The ScaledObject is a KEDA custom resource: without KEDA's CRDs the API server answers only
"no matches for kind" once helm has rendered everything, and nothing would scale. With a
NetworkPolicy, networkPolicy.autoscalerFrom admits KEDA's operator: a --reuse-values upgrade
from a chart older than it drops the key (the old defaults), and the rule would silently go.
*/}}
{{- define "modelops-dask.validate.keda" -}}
{{- $errors := list -}}
{{- if and (include "modelops-dask.autoscaling" .) (not (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject")) -}}
{{- $errors = append $errors "worker.autoscaling.enabled=true needs KEDA (the ScaledObject CRD, keda.sh/v1alpha1), which this cluster does not serve. Install KEDA first (its Helm chart kedacore/keda, or its release manifests), or set worker.autoscaling.enabled=false. (helm template knows no cluster: pass --api-versions keda.sh/v1alpha1/ScaledObject.)" -}}
{{- end -}}
{{- $np := .Values.networkPolicy | default dict -}}
{{- if and (include "modelops-dask.autoscaling" .) $np.enabled (kindIs "invalid" (index $np "autoscalerFrom")) -}}
{{- $errors = append $errors (printf "networkPolicy.enabled=true and worker.autoscaling.enabled=true but networkPolicy.autoscalerFrom is not set: the NetworkPolicy would keep KEDA's operator from the scheduler's adaptive target (port 8787), and the workers would never scale. Set it (the chart's default: the namespace keda, [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: keda}}}]), or to [] if networkPolicy.clientFrom already admits KEDA's operator. %s" (include "modelops-dask.missingDefaultHint" .)) -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}
