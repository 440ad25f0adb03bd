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
