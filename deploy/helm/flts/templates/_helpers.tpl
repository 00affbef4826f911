{{/*
Names, labels and the shared pieces every FLTS pod is built from.

Selector labels are app.kubernetes.io/name + instance + component and nothing else: they are
immutable on a Deployment, so nothing that changes between upgrades (version, chart) may be in
them. Everything else goes to the ordinary labels.
*/}}

{{- define "flts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flts.fullname" -}}
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

{{- define "flts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* (dict "ctx" $ "component" "inference") */}}
{{- define "flts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flts.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "flts.labels" -}}
{{ include "flts.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: flts
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "flts.chart" .ctx }}
{{- end }}

{{- define "flts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flts.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-credentials" (include "flts.fullname" .) }}
{{- end }}
{{- end }}

{{- define "flts.hasSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.values }}true{{ end }}
{{- end }}

{{/* The image reference; refuses `latest` (and an empty tag resolves to appVersion). */}}
{{- define "flts.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be `latest`: pin a version (or set image.digest)" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Third-party images (dev backends): refuse untagged and `latest`. */}}
{{- define "flts.pinnedImage" -}}
{{- $parts := splitList ":" . }}
{{- if or (lt (len $parts) 2) (eq (last $parts) "latest") }}
{{- fail (printf "image %q must be pinned to a version tag, not latest or untagged" .) }}
{{- end }}
{{- . }}
{{- end }}

{{/*
Threads for OpenMP/BLAS/torch from a CPU limit ("2", "1500m", 0.5): the limit rounded down,
at least 1, so a pod never runs more compute threads than the CPU it may use.
*/}}
{{- define "flts.threads" -}}
{{- $cpu := toString (default "1" .) }}
{{- $n := 1 }}
{{- if hasSuffix "m" $cpu }}
{{- $n = div (atoi (trimSuffix "m" $cpu)) 1000 }}
{{- else }}
{{- $n = int (floor (float64 $cpu)) }}
{{- end }}
{{- max 1 $n }}
{{- end }}

{{/* Environment of every FLTS container: (dict "ctx" $ "resources" .resources) */}}
{{- define "flts.env" -}}
{{- $threads := include "flts.threads" .resources.limits.cpu -}}
- name: OMP_NUM_THREADS
  value: {{ $threads | quote }}
- name: MKL_NUM_THREADS
  value: {{ $threads | quote }}
- name: OPENBLAS_NUM_THREADS
  value: {{ $threads | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}

{{/* The chart's own Secret with the bus URL (distributed mode): it may hold credentials. */}}
{{- define "flts.busSecretName" -}}
{{- printf "%s-bus" (include "flts.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flts.hasApiKeys" -}}
{{- if or .Values.security.apiKeys.existingSecret .Values.security.apiKeys.keysFile }}true{{ end }}
{{- end }}

{{- define "flts.apiKeysSecretName" -}}
{{- if .Values.security.apiKeys.existingSecret }}
{{- .Values.security.apiKeys.existingSecret }}
{{- else }}
{{- printf "%s-api-keys" (include "flts.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The API keys file, only for the pods that authenticate requests (gateway, inference,
embedded): a volume, its mount and the setting that points at it. Nothing when no keys are
configured.
*/}}
{{- define "flts.apiKeysEnv" -}}
{{- if include "flts.hasApiKeys" . }}
- name: FLTS_SECURITY__KEYS_FILE
  value: /etc/flts/api-keys/api-keys.json
{{- end }}
{{- end }}

{{- define "flts.apiKeysMount" -}}
{{- if include "flts.hasApiKeys" . }}
- name: api-keys
  mountPath: /etc/flts/api-keys
  readOnly: true
{{- end }}
{{- end }}

{{- define "flts.apiKeysVolume" -}}
{{- if include "flts.hasApiKeys" . }}
- name: api-keys
  secret:
    secretName: {{ include "flts.apiKeysSecretName" . }}
    defaultMode: 0440
    items:
      - key: api-keys.json
        path: api-keys.json
{{- end }}
{{- end }}

{{- define "flts.envFrom" -}}
- configMapRef:
    name: {{ include "flts.fullname" . }}
{{- if eq .Values.mode "distributed" }}
- secretRef:
    name: {{ include "flts.busSecretName" . }}
{{- end }}
{{- if include "flts.hasSecret" . }}
- secretRef:
    name: {{ include "flts.secretName" . }}
{{- end }}
{{- end }}

{{/* Probes on an HTTP port: (dict "ctx" $ "port" "http") */}}
{{- define "flts.probes" -}}
{{- $p := .ctx.Values.probes }}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: {{ default "/readyz" .readinessPath }}
    port: {{ .port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
{{- end }}

{{- define "flts.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every FLTS pod. */}}
{{- define "flts.podCommon" -}}
serviceAccountName: {{ include "flts.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "flts.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.sizeLimit }}
{{- end }}

{{- define "flts.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
A pipeline worker Deployment (`flts worker NAME`), probed through its health server:
(dict "ctx" $ "component" "preprocess" "worker" "preprocess" "model" "" "replicas" 1
      "resources" {...} "strategy" "RollingUpdate")
*/}}
{{- /*
  A worker Deployment. Optional: "model" (a trainer's model type), "strategy", "grace", and
  "shard"/"shards" (shard k of n > 1: the name gains "-k", the pods and the selector a
  flts.io/shard label, like the inference shards, and "shardEnv" names the setting that tells
  the worker its shard, e.g. FLTS_LIVE__MONITOR_SHARD).
*/}}
{{- define "flts.workerDeployment" -}}
{{- $ctx := .ctx }}
{{- $port := $ctx.Values.metrics.workerPort }}
{{- $shards := int (default 1 .shards) }}
{{- $base := printf "%s-%s" (include "flts.fullname" $ctx) .component | trunc 63 | trimSuffix "-" }}
{{- $name := ternary $base (printf "%s-%d" ($base | trunc 59 | trimSuffix "-") (int .shard)) (eq $shards 1) }}
{{- $shardLabel := ternary "" (printf "flts.io/shard: %q" (toString (int .shard))) (eq $shards 1) }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "flts.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
    {{- with .model }}
    flts.io/model-type: {{ . }}
    {{- end }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  strategy:
    type: {{ default "RollingUpdate" .strategy }}
  selector:
    matchLabels:
      {{- include "flts.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
      {{- with $shardLabel }}
      {{ . }}
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "flts.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with .model }}
        flts.io/model-type: {{ . }}
        {{- end }}
        {{- with $shardLabel }}
        {{ . }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
        {{- include "flts.scrapeAnnotations" (dict "ctx" $ctx "port" $port) | nindent 8 }}
    spec:
      {{- include "flts.podCommon" $ctx | nindent 6 }}
      terminationGracePeriodSeconds: {{ default 60 .grace }}
      containers:
        - name: {{ .worker }}
          image: {{ include "flts.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args:
            - worker
            - {{ .worker }}
            {{- with .model }}
            - --model
            - {{ . }}
            {{- end }}
          env:
            {{- include "flts.env" (dict "ctx" $ctx "resources" .resources) | nindent 12 }}
            {{- with .model }}
            - name: FLTS_MODEL_TYPE
              value: {{ . | quote }}
            {{- end }}
            {{- if gt $shards 1 }}
            - name: {{ required "a sharded worker needs shardEnv" .shardEnv }}
              value: {{ printf "%d/%d" (int .shard) $shards | quote }}
            {{- end }}
            - name: FLTS_METRICS_PORT
              value: {{ $port | quote }}
            - name: FLTS_METRICS_HOST
              value: "0.0.0.0"
          envFrom:
            {{- include "flts.envFrom" $ctx | nindent 12 }}
          ports:
            - name: health
              containerPort: {{ $port }}
              protocol: TCP
          {{- include "flts.probes" (dict "ctx" $ctx "port" "health") | nindent 10 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "flts.scratchMounts" $ctx | nindent 12 }}
      volumes:
        {{- include "flts.scratchVolumes" $ctx | nindent 8 }}
{{- end }}
