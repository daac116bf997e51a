{{/* Chart name. */}}
{{- define "webhook-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "webhook-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "webhook-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "webhook-operator.labels" -}}
helm.sh/chart: {{ include "webhook-operator.chart" . }}
app.kubernetes.io/name: {{ include "webhook-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhook-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "webhook-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Full labels of one component. */}}
{{- define "webhook-operator.componentLabels" -}}
{{ include "webhook-operator.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "webhook-operator.controllerServiceAccountName" -}}
{{- if .Values.serviceAccount.controller.create }}
{{- default (printf "%s-controller" (include "webhook-operator.fullname" .)) .Values.serviceAccount.controller.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.controller.name }}
{{- end }}
{{- end }}

{{- define "webhook-operator.dispatcherServiceAccountName" -}}
{{- if .Values.serviceAccount.dispatcher.create }}
{{- default (printf "%s-dispatcher" (include "webhook-operator.fullname" .)) .Values.serviceAccount.dispatcher.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.dispatcher.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest or repository:tag (appVersion by default). */}}
{{- define "webhook-operator.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* policy/v1 PodDisruptionBudget from Kubernetes 1.21, policy/v1beta1 before. */}}
{{- define "webhook-operator.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version }}policy/v1{{ else }}policy/v1beta1{{ end }}
{{- end }}

{{/* Environment every process gets: its Pod name and namespace (leader election, identity). */}}
{{- define "webhook-operator.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.watchNamespace }}
- name: WATCH_NAMESPACE
  value: {{ .Values.watchNamespace | quote }}
{{- end }}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Liveness and readiness probes on the metrics port. */}}
{{- define "webhook-operator.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* "true" when the dispatcher keeps its queue in the shared PostgreSQL store (a Deployment). */}}
{{- define "webhook-operator.postgres" -}}
{{- if eq (dig "type" "sqlite" (.Values.store | default dict)) "postgres" }}true{{ end }}
{{- end }}

{{/* "true" while a migration keeps the release's SQLite StatefulSet draining next to the Deployment. */}}
{{- define "webhook-operator.drainSqlite" -}}
{{- if and (include "webhook-operator.postgres" .) (dig "drainSqlite" false (.Values.store | default dict)) }}true{{ end }}
{{- end }}

{{/* Selector labels of the PostgreSQL dispatchers (a Deployment): the dispatcher's, plus the
store, so that a draining SQLite StatefulSet of the same release (store.drainSqlite) is told apart. */}}
{{- define "webhook-operator.dispatcherPostgresSelectorLabels" -}}
{{ include "webhook-operator.selectorLabels" (dict "ctx" . "component" "dispatcher") }}
webhooks.pitchey.io/store: postgres
{{- end }}

{{/* Prefix of the dispatcher's partition and member Leases: 1–50 characters (also a label value). */}}
{{- define "webhook-operator.dispatcherLeasePrefix" -}}
{{- default (printf "%s-dispatcher" (include "webhook-operator.fullname" . | replace "." "-")) .Values.dispatcher.leasePrefix | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/* Whether the dispatcher gets a PodDisruptionBudget: as set, or (null) with postgres only. */}}
{{- define "webhook-operator.dispatcherPdb" -}}
{{- $enabled := .Values.dispatcher.podDisruptionBudget.enabled }}
{{- if kindIs "bool" $enabled }}{{ if $enabled }}true{{ end }}
{{- else if include "webhook-operator.postgres" . }}true{{ end }}
{{- end }}

{{/* "true" when the dispatcher serves the aggregated query API and the chart registers it
(dispatcher.queryApi.enabled). Off when the key is missing, as after `helm upgrade --reuse-values`
from a chart version without it, instead of failing on a nil map. */}}
{{- define "webhook-operator.queryApi" -}}
{{- if dig "queryApi" "enabled" false (.Values.dispatcher | default dict) }}true{{ end }}
{{- end }}
