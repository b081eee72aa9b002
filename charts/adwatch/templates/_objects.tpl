{{/*
Named objects, included by component.yaml once per instance. An instance is a component
(generator, detector) or one notifier channel (notifier-slack, ...). Every object takes a ctx:
  root       the chart's root context ($)
  name       instance name (notifier-slack)       component  component key (notifier)
  c          merged values: default <- component (<- channel)
  extraEnv   settings the chart derives (map)     args       container args (list)
  volumes    extra volumes (list)                  mounts     their volumeMounts (list)
*/}}

{{- define "adwatch.envConfigMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "adwatch.instanceName" . }}-env
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
data:
  {{- include "adwatch.envMap" . | nindent 2 }}
{{- end -}}

{{- define "adwatch.podVolumes" -}}
- name: tmp
  emptyDir: {}
{{- with .volumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "adwatch.podMounts" -}}
- name: tmp
  mountPath: /tmp
{{- with .mounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "adwatch.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "adwatch.instanceName" . }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
spec:
  {{- if not (include "adwatch.scaledByKeda" .) }}{{/* a KEDA ScaledObject owns the replicas otherwise */}}
  replicas: {{ .c.replicas }}
  {{- end }}
  {{- with .strategy }}
  strategy:
    type: {{ . }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "adwatch.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      {{- $checksums := dict "checksum/env" (include "adwatch.envMap" . | sha256sum) }}
      {{- with .checksum }}{{ $_ := set $checksums "checksum/files" . }}{{ end }}
      {{- include "adwatch.podMeta" (dict "ctx" . "c" .c "annotations" $checksums) | nindent 6 }}
    spec:
      serviceAccountName: {{ include "adwatch.serviceAccountName" . }}
      automountServiceAccountToken: false
      securityContext:
        {{- toYaml .c.podSecurityContext | nindent 8 }}
      {{- with .c.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "adwatch.podPlacement" . | trim }}{{ . | nindent 6 }}{{ end }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ include "adwatch.image" . }}
          imagePullPolicy: {{ .c.image.pullPolicy }}
          {{- with .args }}
          args:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "adwatch.instanceName" . }}-env
          env:
            {{- include "adwatch.podEnv" . | nindent 12 }}
          ports:
            - name: metrics
              containerPort: {{ .c.metricsPort }}
              protocol: TCP
          startupProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 5
            failureThreshold: 36
          livenessProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: metrics}
            periodSeconds: 5
            failureThreshold: 3
          resources:
            {{- toYaml .c.resources | nindent 12 }}
          securityContext:
            {{- toYaml .c.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "adwatch.podMounts" . | nindent 12 }}
      volumes:
        {{- include "adwatch.podVolumes" . | nindent 8 }}
{{- end -}}

{{/* The Service in front of /metrics (ServiceMonitor target; port-forward for /readyz). */}}
{{- define "adwatch.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "adwatch.instanceName" . }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "adwatch.selectorLabels" . | nindent 4 }}
    {{- with .serviceSelector }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: metrics
      port: {{ .c.metricsPort }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{/*
An Ingress to a notifier channel's HTTP routes (Slack's request URL, the silence API): only the
listed paths, each an exact match, so /metrics on the same port stays inside the cluster.
*/}}
{{- define "adwatch.ingress" -}}
{{- $ctx := .ctx -}}
{{- $in := .ingress -}}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ include "adwatch.instanceName" $ctx }}
  labels:
    {{- include "adwatch.labels" $ctx | nindent 4 }}
  {{- with $in.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $in.className }}
  ingressClassName: {{ . }}
  {{- end }}
  {{- with $in.tlsSecret }}
  tls:
    - hosts: [{{ $in.host | quote }}]
      secretName: {{ . }}
  {{- end }}
  rules:
    - host: {{ $in.host | quote }}
      http:
        paths:
          {{- range $in.paths }}
          - path: {{ . }}
            pathType: {{ if eq . "/api/v1/silences" }}Prefix{{ else }}Exact{{ end }}
            backend:
              service:
                name: {{ include "adwatch.instanceName" $ctx }}
                port: {name: metrics}
          {{- end }}
{{- end -}}

{{/*
The detector as a spark-operator SparkApplication (cluster mode): the driver runs the job and
serves /metrics on the metrics port; executors run the tasks. Both read the same env ConfigMap.
*/}}
{{- define "adwatch.sparkApplication" -}}
{{- $spark := .c.spark -}}
{{- $sa := include "adwatch.sparkServiceAccount" . -}}
{{- $cores := int $spark.executor.cores -}}
{{- $instances := int $spark.executor.instances -}}
{{- if eq $instances 0 }}{{ $instances = div (add (int $spark.partitions) $cores -1) $cores }}{{ end -}}
{{- if gt (mul $instances $cores) (int $spark.partitions) }}
{{- fail (printf "detector.spark: %d executors x %d cores exceed the %d input partitions (idle cores)" $instances $cores (int $spark.partitions)) }}
{{- end -}}
{{- if and (not .c.checkpoint.url) (ne .c.checkpoint.pvc.accessMode "ReadWriteMany") }}
{{- fail "detector.mode=sparkApplication: the checkpoint needs checkpoint.url (s3a://...) or a ReadWriteMany PVC (executors on other nodes write state)" }}
{{- end -}}
{{- $podSecurity := .c.podSecurityContext -}}
{{- /* Spark's entrypoint writes into the image (/opt/spark/work-dir, /etc/passwd check): keep the root fs writable. */ -}}
{{- $security := set (deepCopy .c.securityContext) "readOnlyRootFilesystem" false -}}
apiVersion: sparkoperator.k8s.io/v1beta2
kind: SparkApplication
metadata:
  name: {{ include "adwatch.instanceName" . }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
spec:
  type: Python
  pythonVersion: "3"
  mode: cluster
  image: {{ include "adwatch.image" . }}
  imagePullPolicy: {{ .c.image.pullPolicy }}
  {{- with .c.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
    {{- end }}
  {{- end }}
  mainApplicationFile: {{ $spark.mainApplicationFile }}
  sparkVersion: {{ $spark.version | quote }}
  {{- with .args }}
  arguments:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  dynamicAllocation:
    enabled: false   # stateful query: executors hold state-store partitions (values.yaml)
  sparkConf:
    spark.kubernetes.executor.deleteOnTermination: "true"
    {{- range $k, $val := $spark.sparkConf }}
    {{ $k }}: {{ $val | toString | quote }}
    {{- end }}
  restartPolicy:
    type: Always
    onFailureRetryInterval: 10
    onSubmissionFailureRetryInterval: 20
  volumes:
    {{- include "adwatch.podVolumes" . | nindent 4 }}
  driver:
    cores: {{ $spark.driver.cores }}
    memory: {{ $spark.driver.memory | quote }}
    serviceAccount: {{ $sa }}
    labels:
      {{- include "adwatch.labels" . | nindent 6 }}
    envFrom:
      - configMapRef:
          name: {{ include "adwatch.instanceName" . }}-env
    env:
      {{- include "adwatch.podEnv" (set (deepCopy .) "otelAttributes" "spark.role=driver") | nindent 6 }}
    ports:
      - name: metrics
        containerPort: {{ .c.metricsPort }}
        protocol: TCP
    podSecurityContext:
      {{- toYaml $podSecurity | nindent 6 }}
    securityContext:
      {{- toYaml $security | nindent 6 }}
    volumeMounts:
      {{- include "adwatch.podMounts" . | nindent 6 }}
  executor:
    instances: {{ $instances }}
    cores: {{ $cores }}
    serviceAccount: {{ $sa }}
    memory: {{ $spark.executor.memory | quote }}
    labels:
      app.kubernetes.io/name: {{ .name }}-executor
      app.kubernetes.io/instance: {{ .root.Release.Name }}
      app.kubernetes.io/part-of: adwatch
    envFrom:
      - configMapRef:
          name: {{ include "adwatch.instanceName" . }}-env
    env:
      {{- include "adwatch.podEnv" (set (deepCopy .) "otelAttributes" "spark.role=executor") | nindent 6 }}
    podSecurityContext:
      {{- toYaml $podSecurity | nindent 6 }}
    securityContext:
      {{- toYaml $security | nindent 6 }}
    volumeMounts:
      {{- include "adwatch.podMounts" . | nindent 6 }}
{{- end -}}


{{/*
The SparkApplication driver's service account and the Role it needs to run executors: it
creates, watches and deletes executor pods, and the services, config maps and PVCs of its app.
*/}}
{{- define "adwatch.sparkRbac" -}}
{{- $sa := include "adwatch.sparkServiceAccount" . -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $sa }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $sa }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: [pods, services, configmaps, persistentvolumeclaims]
    verbs: [create, get, list, watch, update, patch, delete, deletecollection]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $sa }}
  labels:
    {{- include "adwatch.labels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $sa }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .root.Release.Namespace }}
{{- end -}}
