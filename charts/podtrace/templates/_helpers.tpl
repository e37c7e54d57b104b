{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "podtrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "podtrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "podtrace.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "podtrace.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "podtrace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "podtrace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component ("operator" or "agent"): pass (list $ "agent"). */}}
{{- define "podtrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podtrace.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "podtrace.image" -}}
{{- $root := index . 0 -}}
{{ printf "%s/podtrace-%s:%s" $root.Values.image.repository (index . 1) (default $root.Chart.AppVersion $root.Values.image.tag) }}
{{- end }}

{{/* Whether a Prometheus Operator object kind should be rendered: (list $ .Values.serviceMonitor.enabled "ServiceMonitor"). */}}
{{- define "podtrace.monitoringEnabled" -}}
{{- $root := index . 0 -}}{{- $setting := toString (index . 1) -}}
{{- if eq $setting "true" -}}true
{{- else if and (eq $setting "auto") ($root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" (index . 2))) -}}true
{{- end -}}
{{- end }}

{{/* Environment of /metrics over TLS (metricsTLS.secretName), for either component. */}}
{{- define "podtrace.tlsEnv" -}}
{{- if .Values.metricsTLS.secretName }}
- {name: PODTRACE_METRICS_TLS_CERT_FILE, value: /etc/podtrace/tls/tls.crt}
- {name: PODTRACE_METRICS_TLS_KEY_FILE, value: /etc/podtrace/tls/tls.key}
{{- if .Values.metricsTLS.clientAuth }}
- {name: PODTRACE_METRICS_TLS_CLIENT_CA_FILE, value: /etc/podtrace/tls/ca.crt}
{{- end }}
{{- end }}
{{- end }}

{{/* The volume mount of the metrics TLS Secret. */}}
{{- define "podtrace.tlsMount" -}}
{{- if .Values.metricsTLS.secretName }}
- {name: metrics-tls, mountPath: /etc/podtrace/tls, readOnly: true}
{{- end }}
{{- end }}

{{/* The volume of the metrics TLS Secret (not subPath-mounted, so renewals reach the pod). */}}
{{- define "podtrace.tlsVolume" -}}
{{- with .Values.metricsTLS.secretName }}
- name: metrics-tls
  secret: {secretName: {{ . }}}
{{- end }}
{{- end }}
