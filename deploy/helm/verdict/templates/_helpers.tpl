{{/* Names and labels shared by every object. 33 characters at most: "-collector-headless" must fit a
    Service name (63) and "-collector" a StatefulSet whose revision label adds 11. */}}
{{- define "verdict.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 33 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 33 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "verdict.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "verdict.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "verdict.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .name $tag -}}
{{- else -}}
{{- printf "%s:%s" .name $tag -}}
{{- end -}}
{{- end -}}

{{- define "verdict.collectorHost" -}}
{{- printf "%s-collector.%s.svc" (include "verdict.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The TLS Secret the collector serves from and the agents trust (ca.crt). */}}
{{- define "verdict.tlsSecret" -}}
{{- if eq .Values.tls.source "secret" -}}
{{- required "tls.existingSecret is required when tls.source is secret" .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-collector-tls" (include "verdict.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* cert-manager or generated, once "auto" is decided. */}}
{{- define "verdict.tlsSource" -}}
{{- if eq .Values.tls.source "auto" -}}
{{- /* Decided once: a Secret the chart generated stays in use when cert-manager arrives later
       (a new CA would break every running agent until restarted). */ -}}
{{- $generated := lookup "v1" "Secret" .Release.Namespace (printf "%s-collector-tls" (include "verdict.fullname" .)) -}}
{{- if and $generated (not (index ($generated.metadata.annotations | default dict) "cert-manager.io/certificate-name")) -}}generated
{{- else if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}cert-manager{{- else -}}generated{{- end -}}
{{- else -}}
{{- .Values.tls.source -}}
{{- end -}}
{{- end -}}

{{- define "verdict.queryTokenSecret" -}}
{{- .Values.collector.queryTokenSecret | default (printf "%s-query-token" (include "verdict.fullname" .)) -}}
{{- end -}}

{{/* A container's locked-down security context; .caps are the capabilities it keeps. */}}
{{- define "verdict.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
  {{- with .caps }}
  add: {{ toJson . }}
  {{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}
