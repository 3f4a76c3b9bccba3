{{/*
What the chart refuses on install and upgrade (included by configmap.yaml):
  - nodes.replication > nodes.replicas: a shard could never get its replicas;
  - a different config.node.shards or nodes.replication than the running
    release's (read with `lookup` from the ConfigMap's annotations): both
    are fixed when the cluster is created, and a node started with others
    is refused when it joins;
  - fewer nodes.replicas than the running StatefulSet has, unless
    nodes.scaleDownDrained says the nodes going away were drained first
    (`roost node drain`, see the README).
`lookup` answers nothing under `helm template` and `--dry-run=client`, so
only a real install/upgrade checks the last two (deploy-checks feeds them a
running release by redefining "roost.running").
*/}}
{{- define "roost.running" -}}
{{- dict
  "configMap" (lookup "v1" "ConfigMap" .Release.Namespace (include "roost.config" .))
  "statefulSet" (lookup "apps/v1" "StatefulSet" .Release.Namespace (include "roost.node" .))
  | toJson -}}
{{- end -}}

{{- define "roost.guards" -}}
{{- $replicas := int .Values.nodes.replicas -}}
{{- $replication := int .Values.nodes.replication -}}
{{- $shards := int .Values.config.node.shards -}}
{{- if gt $replication $replicas -}}
{{- fail (printf "nodes.replication (%d) is more than nodes.replicas (%d): every shard needs that many nodes" $replication $replicas) -}}
{{- end -}}
{{- $running := include "roost.running" . | fromJson -}}
{{- with $running.configMap -}}
{{- $was := .metadata.annotations | default dict -}}
{{- with index $was "roost.io/shards" -}}
{{- if ne (int .) $shards -}}
{{- fail (printf "config.node.shards cannot change on an existing cluster (it is %s, the values say %d); restore a backup into a new release instead" . $shards) -}}
{{- end -}}
{{- end -}}
{{- with index $was "roost.io/replication" -}}
{{- if ne (int .) $replication -}}
{{- fail (printf "nodes.replication cannot change on an existing cluster (it is %s, the values say %d): nodes with another value are refused when they join" . $replication) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with $running.statefulSet -}}
{{- $running := int .spec.replicas -}}
{{- if and (lt $replicas $running) (ne (int $.Values.nodes.scaleDownDrained) $replicas) -}}
{{- fail (printf "nodes.replicas goes from %d to %d: first drain each node that goes away (roost node drain --id N, highest ordinals first), then set nodes.scaleDownDrained=%d to confirm" $running $replicas $replicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Pod annotation that rolls the pods on `helm upgrade` when the certificate
Secret changed: Roost reads its certificate files at startup only. The
Secret is read with `lookup` (nothing under `helm template`). A renewal
between upgrades (cert-manager) needs `kubectl rollout restart` (README).
*/}}
{{- define "roost.tlsChecksum" -}}
{{- if and .Values.tls.enabled .Values.tls.secretName -}}
{{- $node := lookup "v1" "Secret" .Release.Namespace .Values.tls.secretName -}}
{{- $edge := lookup "v1" "Secret" .Release.Namespace (.Values.tls.edgeSecretName | default "") -}}
checksum/tls: {{ list ($node.data | default dict) ($edge.data | default dict) | toJson | sha256sum | quote }}
{{- end -}}
{{- end -}}
