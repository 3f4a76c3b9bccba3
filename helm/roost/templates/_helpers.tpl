{{/* Chart name. */}}
{{- define "roost.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart, or fullnameOverride. */}}
{{- define "roost.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "roost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "roost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "roost.selector" -}}
app.kubernetes.io/name: {{ include "roost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Resource names. */}}
{{- define "roost.node" -}}{{ include "roost.fullname" . | trunc 58 | trimSuffix "-" }}-node{{- end -}}
{{- define "roost.nodeHeadless" -}}{{ include "roost.fullname" . | trunc 49 | trimSuffix "-" }}-node-headless{{- end -}}
{{- define "roost.edge" -}}{{ include "roost.fullname" . | trunc 58 | trimSuffix "-" }}-edge{{- end -}}
{{- define "roost.config" -}}{{ include "roost.fullname" . | trunc 56 | trimSuffix "-" }}-config{{- end -}}

{{- define "roost.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roost.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "roost.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/* The DNS name of node pod N (0-based) through the headless Service. */}}
{{- define "roost.nodeAddr" -}}
{{- $ := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.cluster.local:8789" (include "roost.node" $) (index . 1) (include "roost.nodeHeadless" $) $.Release.Namespace -}}
{{- end -}}

{{/* Every node's address, comma-separated: what edges join through. */}}
{{- define "roost.nodeAddrs" -}}
{{- $addrs := list -}}
{{- range $i := until (int .Values.nodes.replicas) -}}
{{- $addrs = append $addrs (include "roost.nodeAddr" (list $ $i)) -}}
{{- end -}}
{{- join "," $addrs -}}
{{- end -}}

{{/* Environment shared by nodes and edges; takes (list $ component). */}}
{{- define "roost.env" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
- name: ROOST_CONFIG
  value: /etc/roost/roost.toml
{{- if not $.Values.tls.enabled }}
# tls.enabled=false: plain, unauthenticated gRPC (`--insecure`).
- name: ROOST_TLS_MODE
  value: insecure
{{- end }}
{{- if $.Values.tls.enabled }}
- name: ROOST_TLS_CA_FILE
  value: /etc/roost-tls/ca.crt
- name: ROOST_TLS_CERT_FILE
  value: /etc/roost-tls/tls.crt
- name: ROOST_TLS_KEY_FILE
  value: /etc/roost-tls/tls.key
{{- with $.Values.tls.serverName }}
- name: ROOST_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with $.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" $.Values.tracing.serviceName $component | quote }}
{{- end }}
{{- with $.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The names a certificate must hold (subject alternative names), comma-separated; takes (list $ component): a node's are the names nodes are dialled at, an edge's the names of the edge Services clients dial. */}}
{{- define "roost.tlsNames" -}}
{{- $ := index . 0 -}}
{{- $ns := $.Release.Namespace -}}
{{- if eq (index . 1) "edge" -}}
{{- $names := list -}}
{{- range $svc := list (include "roost.edge" $) (printf "%s-grpc" (include "roost.edge" $)) -}}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}
{{- join ", " $names -}}
{{- else -}}
{{- $headless := include "roost.nodeHeadless" $ -}}
{{- $node := include "roost.node" $ -}}
*.{{ $headless }}.{{ $ns }}.svc.cluster.local, {{ $headless }}.{{ $ns }}.svc.cluster.local, {{ $headless }}.{{ $ns }}.svc, {{ $node }}, {{ $node }}.{{ $ns }}, {{ $node }}.{{ $ns }}.svc, {{ $node }}.{{ $ns }}.svc.cluster.local
{{- end -}}
{{- end -}}

{{/* The Secret with a component's certificate; takes (list $ component): node, edge, or ca (generated only). */}}
{{- define "roost.tlsSecret" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- if and (eq $component "node") $.Values.tls.secretName -}}
{{- $.Values.tls.secretName -}}
{{- else if and (eq $component "edge") $.Values.tls.edgeSecretName -}}
{{- $.Values.tls.edgeSecretName -}}
{{- else -}}
{{- include "roost.fullname" $ | trunc 52 | trimSuffix "-" }}-tls-{{ $component }}
{{- end -}}
{{- end -}}

{{/* Probes on the admin port; takes a probes value block. */}}
{{- define "roost.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: {{ .startup.periodSeconds }}
  failureThreshold: {{ .startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  periodSeconds: {{ .liveness.periodSeconds }}
  failureThreshold: {{ .liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: {{ .readiness.periodSeconds }}
  failureThreshold: {{ .readiness.failureThreshold }}
{{- end -}}

{{/* What the chart refuses to render. */}}
{{- define "roost.validate" -}}
{{- if and .Values.tls.enabled (ne (not .Values.tls.secretName) (not .Values.tls.edgeSecretName)) -}}
{{- fail "tls.secretName (the nodes' certificate) and tls.edgeSecretName (the edges') go together: set both to Secrets with ca.crt, tls.crt and tls.key, or neither and the chart makes them (see values.yaml for the names and roles the certificates must hold)" -}}
{{- end -}}
{{- if lt (int .Values.nodes.replicas) 1 -}}
{{- fail "nodes.replicas must be at least 1" -}}
{{- end -}}
{{- if lt (int .Values.nodes.replication) 1 -}}
{{- fail "nodes.replication must be at least 1" -}}
{{- end -}}
{{- end -}}
