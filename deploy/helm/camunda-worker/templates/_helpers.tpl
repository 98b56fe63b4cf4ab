{{/* The chart's name, or nameOverride. */}}
{{- define "camunda-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: the release name when it already holds the chart's name (so release
"camunda-worker" installs objects named as the kustomize files do), else "<release>-<chart>".
*/}}
{{- define "camunda-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "camunda-worker.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* What selects the worker's pods: stable for the life of a release. */}}
{{- define "camunda-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "camunda-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "camunda-worker.labels" -}}
{{ include "camunda-worker.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret the credentials come from. */}}
{{- define "camunda-worker.secretName" -}}
{{- default (printf "%s-credentials" (include "camunda-worker.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{/* worker.toml: the values' text, or the file the project ships. */}}
{{- define "camunda-worker.config" -}}
{{- if .Values.config }}{{ .Values.config }}{{ else }}{{ .Files.Get "files/worker.toml" }}{{ end }}
{{- end }}
