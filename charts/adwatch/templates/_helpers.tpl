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
{{- if $v.grafana.url }}{{ $_ := set $env "ADWATCH_GRAFANA_URL" $v.grafana.url }}{{ end -}}
{{- if eq .component "notifier" }}
{{- with $v.links.dashboardUrlTemplate }}{{ $_ := set $env "ADWATCH_NOTIFIER_DASHBOARD_URL_TEMPLATE" . }}{{ end -}}
{{- if $v.links.runbookBaseUrl }}{{ $_ := set $env "ADWATCH_NOTIFIER_RUNBOOK_URL_TEMPLATE" (printf "%s/{alert_type}.md" (trimSuffix "/" $v.links.runbookBaseUrl)) }}{{ end -}}
{{- end }}
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
{{- include "adwatch.storeEnv" . }}
{{- include "adwatch.secretEnv" . }}
{{- end -}}


{{- /* ===== Redis and ClickHouse: Secrets, passwords and the URLs built from them (#18) ===== */ -}}

{{/* The in-release Redis's password Secret: redis.auth.existingSecret, else the generated <fullname>-redis. ctx: root */}}
{{- define "adwatch.redisSecret" -}}
{{- .Values.redis.auth.existingSecret | default (printf "%s-redis" (include "adwatch.fullname" .)) -}}
{{- end -}}
{{- define "adwatch.redisPasswordKey" -}}
{{- if .Values.redis.auth.existingSecret }}{{ .Values.redis.auth.passwordKey | default "password" }}{{ else }}password{{ end -}}
{{- end -}}

{{/* The in-release ClickHouse's password Secret, the same way. ctx: root */}}
{{- define "adwatch.clickhouseSecret" -}}
{{- .Values.clickhouse.auth.existingSecret | default (printf "%s-clickhouse" (include "adwatch.fullname" .)) -}}
{{- end -}}
{{- define "adwatch.clickhousePasswordKey" -}}
{{- if .Values.clickhouse.auth.existingSecret }}{{ .Values.clickhouse.auth.passwordKey | default "password" }}{{ else }}password{{ end -}}
{{- end -}}

{{/*
A password the chart generates, base64: the one already in the Secret on an upgrade (lookup),
else 32 random letters and digits (URL-safe). ctx: root, secret (the Secret's name)
*/}}
{{- define "adwatch.generatedPassword" -}}
{{- $s := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $s $s.data (hasKey $s.data "password") -}}
{{- index $s.data "password" -}}
{{- else -}}
{{- randAlphaNum 32 | b64enc -}}
{{- end -}}
{{- end -}}

{{/*
Env entries for the stores, before the component's own secretEnv (which may override them):
ADWATCH_REDIS_URL for every component, ADWATCH_CLICKHOUSE_URL for the detector. A password is a
secretKeyRef and the URL refers to it as $(VAR), so no manifest but the Secret holds it.
Without redis.deploy the URL is a whole secretKeyRef (redis.external), required.
*/}}
{{- define "adwatch.storeEnv" -}}
{{- $v := .root.Values -}}
{{- $fullname := include "adwatch.fullname" .root -}}
{{- if not (hasKey .c.secretEnv "ADWATCH_REDIS_URL") }}
{{- if $v.redis.deploy }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "adwatch.redisSecret" .root }}, key: {{ include "adwatch.redisPasswordKey" .root }}}
- name: ADWATCH_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s-redis:6379/0" $fullname | quote }}
{{- else }}
- name: ADWATCH_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.external.existingSecret | required "redis.deploy is false, so Redis is external: set redis.external.existingSecret to a Secret holding its URL (key redis.external.urlKey, e.g. rediss://:<password>@redis.example:6379/0), or redis.deploy=true" }}
      key: {{ $v.redis.external.urlKey | default "redis-url" }}
{{- end }}
{{- end }}
{{- if and (eq .component "detector") (not (hasKey .c.secretEnv "ADWATCH_CLICKHOUSE_URL")) }}
{{- if $v.clickhouse.deploy }}
- name: CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "adwatch.clickhouseSecret" .root }}, key: {{ include "adwatch.clickhousePasswordKey" .root }}}
- name: ADWATCH_CLICKHOUSE_URL
  value: {{ printf "http://%s:$(CLICKHOUSE_PASSWORD)@%s-clickhouse:8123/%s" $v.clickhouse.auth.username $fullname $v.clickhouse.database | quote }}
{{- else if $v.clickhouse.external.existingSecret }}
- name: ADWATCH_CLICKHOUSE_URL
  valueFrom:
    secretKeyRef: {name: {{ $v.clickhouse.external.existingSecret }}, key: {{ $v.clickhouse.external.urlKey | default "clickhouse-url" }}}
{{- else if eq (toString (.c.env.ADWATCH_DETECTOR_CLICKHOUSE_ENABLED | default "false")) "true" }}
{{- fail "components.detector.env.ADWATCH_DETECTOR_CLICKHOUSE_ENABLED is true but no ClickHouse is set: clickhouse.deploy=true, or clickhouse.external.existingSecret (a Secret holding its URL)" }}
{{- end }}
{{- end }}
{{- end -}}

{{- /* ===== Guard rails: pod metadata, placement, service accounts (#18) ===== */ -}}

{{/* A pod template's metadata: the instance's labels + c.podLabels, c.podAnnotations + ctx annotations. ctx: ctx, c, annotations */}}
{{- define "adwatch.podMeta" -}}
labels:
  {{- include "adwatch.labels" .ctx | nindent 2 }}
  {{- range $k, $v := (.c.podLabels | default dict) }}
  {{ $k }}: {{ $v | quote }}
  {{- end }}
{{- $ann := merge (deepCopy (.annotations | default dict)) (.c.podAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* nodeSelector, affinity, tolerations of a pod spec. ctx: c */}}
{{- define "adwatch.podPlacement" -}}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* An instance's ServiceAccount name: c.serviceAccount.name, else the instance's name. */}}
{{- define "adwatch.serviceAccountName" -}}
{{- $sa := .c.serviceAccount | default dict -}}
{{- $sa.name | default (include "adwatch.instanceName" .) -}}
{{- end -}}

{{/* A ServiceAccount without a token (the pods never call the Kubernetes API). ctx: an instance ctx, or root/name/component + c */}}
{{- define "adwatch.serviceAccount" -}}
{{- $sa := .c.serviceAccount | default dict -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "adwatch.serviceAccountName" . }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
  {{- with $sa.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end -}}

{{/*
Every workload instance as data, for the templates that add guard rails around them (ServiceAccounts,
PodDisruptionBudgets, NetworkPolicies, ScaledObjects): {instances: [{name, component, channel, c}]}
with c merged as in component.yaml (default <- component <- channel). ctx: root
*/}}
{{- define "adwatch.instances" -}}
{{- $out := list -}}
{{- range $component, $values := .Values.components }}
{{- if $values.enabled }}
{{- $c := mergeOverwrite (deepCopy $.Values.default) (deepCopy $values) }}
{{- if eq $component "notifier" }}
{{- range $channel, $chValues := $c.channels }}
{{- if $chValues.enabled }}
{{- $cc := mergeOverwrite (deepCopy (omit $c "channels" "routes" "enabled")) (deepCopy (omit $chValues "enabled")) }}
{{- $out = append $out (dict "name" (printf "notifier-%s" $channel) "component" "notifier" "channel" $channel "c" $cc) }}
{{- end }}
{{- end }}
{{- else }}
{{- $out = append $out (dict "name" $component "component" $component "channel" "" "c" $c) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (dict "instances" $out) -}}
{{- end -}}

{{- /* ===== Autoscaling (#18) ===== */ -}}

{{/* A notifier channel's KEDA settings: autoscaling.notifier <- autoscaling.notifier.channels.<channel>. ctx: root, channel */}}
{{- define "adwatch.notifierAutoscaling" -}}
{{- $a := .root.Values.autoscaling.notifier -}}
{{- toYaml (mergeOverwrite (omit (deepCopy $a) "channels") (deepCopy (index ($a.channels | default dict) .channel | default dict))) -}}
{{- end -}}

{{/* "true" when a ScaledObject owns this instance's replicas. ctx: an instance ctx */}}
{{- define "adwatch.scaledByKeda" -}}
{{- if eq .component "notifier" -}}
{{- $a := include "adwatch.notifierAutoscaling" (dict "root" .root "channel" (trimPrefix "notifier-" .name)) | fromYaml -}}
{{- if $a.enabled }}true{{ end -}}
{{- end -}}
{{- end -}}
