{{/* The labels every object carries (deploy/ carries the same). */}}
{{- define "dpdk-gitops.labels" -}}
app.kubernetes.io/part-of: dpdk-gitops
{{- end }}

{{/* An image reference: repository:tag, or repository:tag@digest when a digest is set.
     The tag defaults to the chart's appVersion (the workspace version). */}}
{{- define "dpdk-gitops.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.digest -}}
{{ .image.repository }}:{{ $tag }}@{{ .image.digest }}
{{- else -}}
{{ .image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/* imagePullPolicy, only when set. */}}
{{- define "dpdk-gitops.pullPolicy" -}}
{{- with .Values.images.pullPolicy -}}
imagePullPolicy: {{ . }}
{{- end -}}
{{- end }}

{{/* The controller's resources: controller.resources, with the memory request and limit
     derived from controller.memory when they are not set (docs/operations.md, "Controller
     memory"): request = base + at rest per node × fleetNodes, limit = (base + peak per
     node × fleetNodes) × headroomPercent / 100, both rounded up to whole MiB. */}}
{{- define "dpdk-gitops.controllerResources" -}}
{{- $r := deepCopy (.Values.controller.resources | default dict) -}}
{{- $m := .Values.controller.memory -}}
{{- $nodes := int $m.fleetNodes -}}
{{- $base := mul (int $m.baseMiB) 1024 -}}
{{- $requests := $r.requests | default dict -}}
{{- $limits := $r.limits | default dict -}}
{{- if not $requests.memory -}}
{{- $kib := add $base (mul (int $m.atRestKiBPerNode) $nodes) -}}
{{- $_ := set $requests "memory" (printf "%dMi" (div (add $kib 1023) 1024)) -}}
{{- end -}}
{{- if not $limits.memory -}}
{{- $kib := div (mul (add $base (mul (int $m.peakKiBPerNode) $nodes)) (int $m.headroomPercent)) 100 -}}
{{- $_ := set $limits "memory" (printf "%dMi" (div (add $kib 1023) 1024)) -}}
{{- end -}}
{{- $_ := set $r "requests" $requests -}}
{{- $_ := set $r "limits" $limits -}}
{{- toYaml $r -}}
{{- end }}
