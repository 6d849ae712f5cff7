{{/*
The mode: `mode` names a preset shipped in presets/ (the same files as the repository's
values-examples/). The five mode keys default to null in values.yaml; each one that is
still null takes the preset's value, so an explicit value always wins:

    explicit value  >  the preset `mode` selects

(values.yaml has no third layer: every preset sets all five keys.) Helm merges values
before a template runs, so a chart cannot tell a default from an explicit value unless the
default is null; that is why the mode keys are null and resolved here.

modelops-dask.resolveMode fills the null keys into .Values.worker in place, once per
render (every template that reads a mode key includes it first; later calls do nothing),
and records what it did in the root context as `ModelopsMode`:
  name      the `mode` value
  explicit  "worker.threads=2 (preset: 1)" for each explicit key that differs from the preset
  matches   the presets whose five keys equal the effective ones
  presets   every shipped preset name
*/}}

{{/* A mode-key value as comparable text (numbers as integers, whatever their YAML origin). */}}
{{- define "modelops-dask.modeText" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The five keys of a worker map as one comparable string. */}}
{{- define "modelops-dask.modeSignature" -}}
{{- $x := .executor | default dict -}}
{{- $parts := list -}}
{{- range $v := list .processes .threads $x.type $x.forceFreshVenv $x.maxProcessReuse -}}
{{- $parts = append $parts (include "modelops-dask.modeText" $v) -}}
{{- end -}}
{{- join "/" $parts -}}
{{- end -}}

{{- define "modelops-dask.resolveMode" -}}
{{- if not (hasKey . "ModelopsMode") -}}
{{- $root := . -}}
{{- $name := .Values.mode | default "" -}}
{{- $presets := dict -}}
{{- range $path, $_ := .Files.Glob "presets/*.yaml" -}}
{{- $_ := set $presets (base $path | trimSuffix ".yaml") (fromYaml ($root.Files.Get $path)) -}}
{{- end -}}
{{- if not $name -}}
{{- fail (printf "mode is not set: set it to one of %s (prod-warm is the chart's default). %s" (keys $presets | sortAlpha | join ", ") (include "modelops-dask.missingDefaultHint" .)) -}}
{{- else if not (hasKey $presets $name) -}}
{{- fail (printf "mode=%q is not a preset of this chart. Set mode to one of: %s." $name (keys $presets | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $preset := (get $presets $name).worker -}}
{{- $w := .Values.worker -}}
{{- if not (kindIs "map" $w.executor) }}{{ $_ := set $w "executor" dict }}{{ end -}}
{{- $explicit := list -}}
{{- range $pair := list (list $w $preset "worker.") (list $w.executor $preset.executor "worker.executor.") -}}
{{- $mine := index $pair 0 -}}
{{- $theirs := index $pair 1 -}}
{{- range $key, $value := $theirs -}}
{{- if not (kindIs "map" $value) -}}
{{- $own := index $mine $key -}}
{{- if kindIs "invalid" $own -}}
{{- $_ := set $mine $key $value -}}
{{- else if ne (include "modelops-dask.modeText" $own) (include "modelops-dask.modeText" $value) -}}
{{- $explicit = append $explicit (printf "%s%s=%s (preset: %s)" (index $pair 2) $key (include "modelops-dask.modeText" $own) (include "modelops-dask.modeText" $value)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $effective := include "modelops-dask.modeSignature" $w -}}
{{- $matches := list -}}
{{- range $other := keys $presets | sortAlpha -}}
{{- if eq $effective (include "modelops-dask.modeSignature" (get $presets $other).worker) -}}
{{- $matches = append $matches $other -}}
{{- end -}}
{{- end -}}
{{- $_ := set . "ModelopsMode" (dict "name" $name "explicit" $explicit "matches" $matches "presets" (keys $presets | sortAlpha)) -}}
{{- end -}}
{{- end -}}
