{{/* Names, labels, images and the env merge. Objects themselves live in _objects.tpl. */}}

{{- define "adwatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of one instance (a component, or one notifier channel). ctx: root, name, component */}}
{{- define "adwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "adwatch.labels" -}}
{{ include "adwatch.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: adwatch
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Release-wide labels for objects that belong to no single component. ctx: root */}}
{{- define "adwatch.releaseLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: adwatch
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Image of an instance: default.image with the component's imageOverride on top. ctx.c is merged */}}
{{- define "adwatch.image" -}}
{{- $img := mergeOverwrite (deepCopy .c.image) (.c.imageOverride | default dict) -}}
{{- $repo := $img.repository | required (printf "components.%s.imageOverride.repository is required" .component) -}}
{{- if $img.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $img.registry) $repo (toString $img.tag) -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* Redis URL: the release's own Redis when redis.deploy, else redis.url. ctx: root */}}
{{- define "adwatch.redisUrl" -}}
{{- if .Values.redis.deploy -}}
{{- printf "redis://%s-redis:6379/0" (include "adwatch.fullname" .) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/*
Plain settings of one instance as a map (rendered into its ConfigMap): shared infrastructure,
ops port, OpenTelemetry, then default.env + component env (+ ctx.extraEnv from the caller).
*/}}
{{- define "adwatch.envMap" -}}
{{- $v := .root.Values -}}
{{- $env := dict
  "ADWATCH_KAFKA_BOOTSTRAP" $v.kafka.bootstrap
  "ADWATCH_LOG_LEVEL" .c.logLevel
  "ADWATCH_METRICS_PORT" (toString .c.metricsPort)
  "OTEL_SERVICE_NAME" .component
  "HOME" "/tmp"
-}}
{{- if not (hasKey .c.secretEnv "ADWATCH_REDIS_URL") }}{{ $_ := set $env "ADWATCH_REDIS_URL" (include "adwatch.redisUrl" .root) }}{{ end -}}
{{- if $v.clickhouse.url }}{{ $_ := set $env "ADWATCH_CLICKHOUSE_URL" $v.clickhouse.url }}{{ end -}}
{{- if $v.grafana.url }}{{ $_ := set $env "ADWATCH_GRAFANA_URL" $v.grafana.url }}{{ end -}}
{{- if $v.otel.endpoint }}{{ $_ := set $env "OTEL_EXPORTER_OTLP_ENDPOINT" $v.otel.endpoint }}{{ end -}}
{{- range $k, $val := (.extraEnv | default dict) }}{{ $_ := set $env $k (toString $val) }}{{ end -}}
{{- range $k, $val := .c.env }}{{ $_ := set $env $k (toString $val) }}{{ end -}}
{{- toYaml $env -}}
{{- end -}}

{{/* Secret settings: env entries with secretKeyRef, never values. ctx.c.secretEnv: NAME -> {secret, key} */}}
{{- define "adwatch.secretEnv" -}}
{{- range $name, $ref := .c.secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
      {{- if hasKey $ref "optional" }}
      optional: {{ $ref.optional }}
      {{- end }}
{{- end }}
{{- end -}}

{{/* The name of an instance's objects. */}}
{{- define "adwatch.instanceName" -}}
{{- printf "%s-%s" (include "adwatch.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}


{{/* The SparkApplication's service account: detector.spark.serviceAccount, else <instance>-spark. */}}
{{- define "adwatch.sparkServiceAccount" -}}
{{- .c.spark.serviceAccount | default (printf "%s-spark" (include "adwatch.instanceName" .)) -}}
{{- end -}}

{{/*
A container's env list: the pod's identity from the downward API, OpenTelemetry resource
attributes made from it (k8s.* semantic conventions, + ctx.otelAttributes), then secrets.
*/}}
{{- define "adwatch.podEnv" -}}
{{- $extra := "" }}{{ if .otelAttributes }}{{ $extra = printf ",%s" .otelAttributes }}{{ end -}}
- name: K8S_POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: K8S_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: K8S_NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE),k8s.node.name=$(K8S_NODE_NAME),service.namespace=adwatch%s" $extra | quote }}
{{- include "adwatch.secretEnv" . }}
{{- end -}}
