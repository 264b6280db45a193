{{/* Chart name. */}}
{{- define "openraft-memory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; also the StatefulSet and pod name prefix. */}}
{{- define "openraft-memory.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The headless Service that gives pods stable DNS names and SRV records. */}}
{{- define "openraft-memory.headless" -}}
{{- printf "%s-headless" (include "openraft-memory.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openraft-memory.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "openraft-memory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "openraft-memory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openraft-memory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "openraft-memory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openraft-memory.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* true when an optional Prometheus Operator object should be rendered. */}}
{{- define "openraft-memory.monitoringEnabled" -}}
{{- $flag := toString .flag -}}
{{- if or (eq $flag "true") (and (eq $flag "auto") (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}
true
{{- end -}}
{{- end }}

{{/* The Secret holding a port's certificate: its own, else cert-manager's. */}}
{{- define "openraft-memory.tlsSecret" -}}
{{- $port := index .root.Values.tls .port -}}
{{- if $port.existingSecret -}}
{{- $port.existingSecret -}}
{{- else if .root.Values.tls.certManager.enabled -}}
{{- include "openraft-memory.fullname" .root }}-tls
{{- else -}}
{{- fail (printf "tls.%s.enabled needs tls.%s.existingSecret or tls.certManager.enabled" .port .port) -}}
{{- end -}}
{{- end }}
