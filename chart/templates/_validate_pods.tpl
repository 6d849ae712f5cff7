{{/* Checks that apply to both pods, scheduler and worker (see _validate.tpl). */}}

{{/*
The kubelet refuses to start a container whose effective runAsUser is 0 while
runAsNonRoot is true ("container's runAsUser breaks non-root policy"): the pod would stay in
CreateContainerConfigError. The effective value is the container's, else the pod's.
*/}}
{{- define "modelops-dask.validate.securityContext" -}}
{{- $errors := list -}}
{{- $components := list "scheduler" "worker" -}}
{{- if .Values.tests.enabled }}{{ $components = append $components "test" }}{{ end -}}
{{- range $component := $components -}}
{{- $sel := dict "ctx" $ "component" $component -}}
{{- $pod := include "modelops-dask.podSecurityContext" $sel | fromYaml -}}
{{- $ctr := include "modelops-dask.containerSecurityContext" $sel | fromYaml -}}
{{- $nonRoot := ternary $ctr.runAsNonRoot $pod.runAsNonRoot (hasKey $ctr "runAsNonRoot") -}}
{{- $user := ternary $ctr.runAsUser $pod.runAsUser (hasKey $ctr "runAsUser") -}}
{{- if and $nonRoot (not (kindIs "invalid" $user)) (eq (int64 $user) 0) -}}
{{- $errors = append $errors (printf "the %s pod would run as root (runAsUser: 0) with runAsNonRoot: true: the kubelet refuses to start such a container (CreateContainerConfigError). Set runAsUser to a non-zero uid (the image's user is 10001), or, if you really want root, set runAsNonRoot: false too (podSecurityContext / containerSecurityContext, or their worker.* and scheduler.* overrides)." $component) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Privilege escalation: Pod Security refuses it in every pod (`baseline` refuses privileged
containers, `restricted` also requires allowPrivilegeEscalation: false). The API server
only warns about a Deployment's template: helm reports the release deployed, then every pod
creation of the ReplicaSets is refused. (Root, added capabilities and the seccomp profile
remain yours to choose: see validate.securityContext and the NOTES warnings.)
*/}}
{{- define "modelops-dask.validate.podSecurity" -}}
{{- $errors := list -}}
{{- $components := list "scheduler" "worker" -}}
{{- if .Values.tests.enabled }}{{ $components = append $components "test" }}{{ end -}}
{{- range $component := $components -}}
{{- $ctr := include "modelops-dask.containerSecurityContext" (dict "ctx" $ "component" $component) | fromYaml -}}
{{- $why := printf "the %s pods would be refused by Pod Security (helm would report the release deployed, then every pod creation fails)" $component -}}
{{- if ne (toString $ctr.allowPrivilegeEscalation) "false" -}}
{{- $errors = append $errors (printf "containerSecurityContext.allowPrivilegeEscalation=%v: %s; it must be false. Remove your override (the chart's default is false), also in scheduler/worker.containerSecurityContext." $ctr.allowPrivilegeEscalation $why) -}}
{{- end -}}
{{- if $ctr.privileged -}}
{{- $errors = append $errors (printf "containerSecurityContext.privileged=true: %s; privileged containers are not allowed. Remove it." $why) -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
A probe block that is missing altogether (null, or a --reuse-values upgrade from a chart
version without it), which would silently drop the probe: `enabled: false` is the way to
turn one off. (What Kubernetes refuses in a probe's fields is in the schema's
definitions.livenessProbe and readinessProbe.)
*/}}
{{- define "modelops-dask.validate.probes" -}}
{{- $errors := list -}}
{{- range $component := list "scheduler" "worker" -}}
{{- $values := index $.Values $component | default dict -}}
{{- range $probe := list "readinessProbe" "livenessProbe" -}}
{{- if not (index $values $probe) -}}
{{- $errors = append $errors (printf "%s.%s is missing (null): to turn the probe off set %s.%s.enabled: false. %s" $component $probe $component $probe (include "modelops-dask.missingDefaultHint" $)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Extra volumes and mounts: unique volume names, not the chart's own; every mount names a
volume of the pod; no mount at a path the chart mounts (all refused by the API server, or
silently shadowing the caches).
*/}}
{{- define "modelops-dask.validate.volumes" -}}
{{- $errors := list -}}
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
{{- $errors = append $errors (printf "%s.extraVolumes has a second volume named %q (the chart's own volumes are %s): Kubernetes refuses duplicate volume names. Rename it." $component .name (join ", " $spec.volumes)) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- $paths := dict -}}
{{- range $mount := $values.extraVolumeMounts -}}
{{- if not (has .name $names) -}}
{{- $errors = append $errors (printf "%s.extraVolumeMounts mounts volume %q, which the pod does not have: add it to %s.extraVolumes (volumes: %s)." $component .name $component (join ", " $names)) -}}
{{- end -}}
{{- $path := .mountPath | default "" | trimSuffix "/" -}}
{{- if not (hasPrefix "/" $path) -}}
{{- $errors = append $errors (printf "%s.extraVolumeMounts entry %q needs an absolute mountPath (got %q)." $component .name (.mountPath | default "")) -}}
{{- end -}}
{{- with get $spec.paths $path -}}
{{- $errors = append $errors (printf "%s.extraVolumeMounts mounts %q at %s, where the chart mounts %s: Kubernetes refuses two mounts at one path. Choose another mountPath." $component $mount.name $path .) -}}
{{- end -}}
{{- if hasKey $paths $path -}}
{{- $errors = append $errors (printf "%s.extraVolumeMounts mounts two volumes at %s: Kubernetes refuses two mounts at one path." $component $path) -}}
{{- end -}}
{{- $_ := set $paths $path true -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
No request above its limit, for every resource of both containers (the API server refuses
the Deployment: "must be less than or equal to ... limit"; helm has then sent the objects
before it). The worker's are checked as rendered, derived memory and cpu included.
*/}}
{{- define "modelops-dask.validate.requestsWithinLimits" -}}
{{- $errors := list -}}
{{- $worker := include "modelops-dask.workerResources" . | fromYaml -}}
{{- range $who, $res := dict "scheduler" (.Values.scheduler.resources | default dict) "worker" $worker -}}
{{- $limits := $res.limits | default dict -}}
{{- range $name, $request := ($res.requests | default dict) -}}
{{- if hasKey $limits $name -}}
{{- $limit := get $limits $name -}}
{{- if gt (include "modelops-dask.quantity" $request | float64) (include "modelops-dask.quantity" $limit | float64) -}}
{{- $errors = append $errors (printf "%s.resources.requests.%s (%v) is above %s.resources.limits.%s (%v): Kubernetes refuses a container whose request exceeds its limit. Lower the request or raise the limit." $who $name $request $who $name $limit) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}

{{/*
Tolerations go to the pods as they are: refuse the combinations of fields the API server
would refuse. (Each field alone, a misspelt field and nodeSelector keys and values are
checked by the schema: definitions.tolerations and nodeSelector.)
*/}}
{{- define "modelops-dask.validate.scheduling" -}}
{{- $errors := list -}}
{{- range $who := list "scheduler" "worker" -}}
{{- range $i, $t := (index $.Values $who).tolerations -}}
{{- $at := printf "%s.tolerations[%d]" $who $i -}}
{{- $op := $t.operator | default "Equal" -}}
{{- if and (eq $op "Exists") (not (empty $t.value)) -}}
{{- $errors = append $errors (printf "%s has operator Exists and a value (%q): Exists matches every value of the key and Kubernetes refuses a value with it. Remove the value, or use operator Equal." $at (toString $t.value)) -}}
{{- end -}}
{{- if and (empty $t.key) (ne $op "Exists") -}}
{{- $errors = append $errors (printf "%s has no key: only operator Exists may leave it empty (to tolerate every taint). Set a key, or operator: Exists." $at) -}}
{{- end -}}
{{- if and (hasKey $t "tolerationSeconds") (ne ($t.effect | default "") "NoExecute") -}}
{{- $errors = append $errors (printf "%s sets tolerationSeconds without effect NoExecute: Kubernetes allows it only with NoExecute. Set effect: NoExecute, or remove tolerationSeconds." $at) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $errors -}}
{{- end -}}
