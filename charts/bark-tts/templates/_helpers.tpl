{{/* Names */}}
{{- define "bark-tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The InferenceService name. KServe derives <name>-predictor-00001-deployment-... from it, and
Knative hosts from <name>-predictor.<namespace>, so keep it short (45 characters).
*/}}
{{- define "bark-tts.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bark-tts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bark-tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "bark-tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bark-tts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels KServe puts on the predictor pods (Serverless and RawDeployment alike). */}}
{{- define "bark-tts.predictorPodSelector" -}}
serving.kserve.io/inferenceservice: {{ include "bark-tts.fullname" . }}
component: predictor
{{- end }}

{{- define "bark-tts.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "bark-tts.sidecarImage" -}}
{{- $repo := .Values.sidecar.image.repository | default .Values.image.repository }}
{{- printf "%s:%s" $repo (.Values.sidecar.image.tag | default .Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret with api-keys, webhook-secret, hf-token: given, or the chart's own. */}}
{{- define "bark-tts.existingSecret" -}}
{{- $a := .Values.secrets.existingSecret }}
{{- $b := .Values.auth.existingSecret }}
{{- if and $a $b (ne $a $b) }}
{{- fail (printf "secrets.existingSecret (%s) and auth.existingSecret (%s) name different Secrets: set one" $a $b) }}
{{- end }}
{{- $a | default $b }}
{{- end }}

{{- define "bark-tts.secretName" -}}
{{- include "bark-tts.existingSecret" . | default (printf "%s-secrets" (include "bark-tts.fullname" .)) }}
{{- end }}

{{- define "bark-tts.serverless" -}}
{{- if eq .Values.deploymentMode "Serverless" }}true{{ end }}
{{- end }}

{{/* The sidecar keeps jobs in SQLite (one file per pod), not in the shared PostgreSQL store. */}}
{{- define "bark-tts.sqliteJobs" -}}
{{- if and .Values.sidecar.enabled (eq .Values.jobs.store "sqlite") }}true{{ end }}
{{- end }}

{{/* The chart runs its own PostgreSQL for the jobs (jobs.postgres.mode bundled). */}}
{{- define "bark-tts.bundledPostgres" -}}
{{- if and .Values.sidecar.enabled (eq .Values.jobs.store "postgres") (eq .Values.jobs.postgres.mode "bundled") }}true{{ end }}
{{- end }}

{{/*
The env that points a container at the jobs' PostgreSQL, under the variable named: the bundled server's
URL (libpq reads the password from PGPASSWORD, not part of the URL), or the external DSN's Secret.
Argument: (list $ "VARIABLE").
*/}}
{{- define "bark-tts.jobsDatabaseEnv" -}}
{{- $ := index . 0 }}
{{- $name := index . 1 }}
{{- $pg := $.Values.jobs.postgres }}
{{- if eq $pg.mode "bundled" }}
- name: {{ $name }}
  value: {{ printf "postgresql://%s@%s:5432/%s" $pg.bundled.username (include "bark-tts.postgresName" $) $pg.bundled.database | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "bark-tts.secretName" $ }}
      key: postgres-password
{{- else }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $pg.external.existingSecret }}
      key: {{ $pg.external.key }}
{{- end }}
{{- end }}

{{- define "bark-tts.postgresName" -}}
{{- printf "%s-postgres" (include "bark-tts.fullname" .) }}
{{- end }}

{{/* SQLite job store on a PVC? null means: yes in RawDeployment, no in Serverless. */}}
{{- define "bark-tts.sidecarPersistent" -}}
{{- if eq .Values.jobs.store "sqlite" }}
{{- $p := .Values.sidecar.persistence.enabled }}
{{- if kindIs "invalid" $p }}{{ if not (include "bark-tts.serverless" .) }}true{{ end }}
{{- else if $p }}true{{ end }}
{{- end }}
{{- end }}

{{/* A PVC the pod writes to (job store, HF cache): it needs fsGroup to be writable by uid 1000. */}}
{{- define "bark-tts.writablePVC" -}}
{{- if or (and (include "bark-tts.sqliteJobs" .) (include "bark-tts.sidecarPersistent" .)) (and (eq .Values.model.source "download") .Values.model.download.cacheClaimName) }}true{{ end }}
{{- end }}

{{- define "bark-tts.sidecarProbes" -}}
{{- $p := .Values.sidecar.probes }}
{{- if kindIs "invalid" $p }}{{ if not (include "bark-tts.serverless" .) }}true{{ end }}
{{- else if $p }}true{{ end }}
{{- end }}

{{- define "bark-tts.scaleMetric" -}}
{{- .Values.autoscaling.scaleMetric | default (ternary "concurrency" "cpu" (eq .Values.deploymentMode "Serverless")) }}
{{- end }}

{{- define "bark-tts.scaleTarget" -}}
{{- $t := .Values.autoscaling.scaleTarget }}
{{- if kindIs "invalid" $t }}{{ ternary 8 80 (eq .Values.deploymentMode "Serverless") }}{{ else }}{{ int $t }}{{ end }}
{{- end }}

{{/* Seconds the startup probe allows before the kubelet restarts the container. */}}
{{- define "bark-tts.startupBudget" -}}
{{- mul .Values.probes.startup.periodSeconds .Values.probes.startup.failureThreshold }}
{{- end }}

{{/* Cross-field rules the JSON schema cannot say clearly. */}}
{{- define "bark-tts.validate" -}}
{{- $a := .Values.autoscaling }}
{{- $serverless := include "bark-tts.serverless" . }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) must not exceed autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if and (lt (int $a.minReplicas) 1) (not $a.scaleToZero) }}
{{- fail "autoscaling.minReplicas is 0 but autoscaling.scaleToZero is false: set minReplicas >= 1, or scaleToZero: true to accept cold starts" }}
{{- end }}
{{- $metric := include "bark-tts.scaleMetric" . }}
{{- if and $serverless (not (has $metric (list "concurrency" "rps"))) }}
{{- fail (printf "autoscaling.scaleMetric %q is not for Serverless: use concurrency or rps" $metric) }}
{{- end }}
{{- if and (not $serverless) (not (has $metric (list "cpu" "memory"))) }}
{{- fail (printf "autoscaling.scaleMetric %q is not for RawDeployment (HPA): use cpu or memory" $metric) }}
{{- end }}
{{- if and .Values.sidecar.enabled $a.scaleToZero (not (include "bark-tts.kedaJobTrigger" .)) }}
{{- fail "sidecar.enabled with autoscaling.scaleToZero: queued jobs need a running pod; keep minReplicas >= 1 (or RawDeployment with rawAutoscalerClass keda, whose job-store trigger wakes one)" }}
{{- end }}
{{- if and (eq .Values.model.source "pvc") (not .Values.model.pvc.claimName) }}
{{- fail "model.source is pvc: set model.pvc.claimName" }}
{{- end }}
{{- if and .Values.eventing.trigger.enabled (not .Values.sidecar.enabled) }}
{{- fail "eventing.trigger.enabled delivers to the webhook sidecar: set sidecar.enabled too" }}
{{- end }}
{{- if and .Values.eventing.trigger.enabled .Values.sidecar.enabled (not .Values.networkPolicy.enabled) }}
{{- fail "eventing.trigger.enabled: Knative Triggers send no API key, so the sidecar then takes CloudEvents without one; that is allowed only behind the chart's NetworkPolicy (networkPolicy.enabled=true), which limits POST / to the broker and ingress namespaces" }}
{{- end }}
{{- if and (include "bark-tts.sqliteJobs" .) (gt (int $a.maxReplicas) 1) }}
{{- fail (printf "jobs.store sqlite keeps each pod's jobs in its own file, so with autoscaling.maxReplicas %d jobs would be lost or unreachable: use jobs.store postgres, or maxReplicas 1" (int $a.maxReplicas)) }}
{{- end }}
{{- if and .Values.sidecar.enabled (eq .Values.jobs.store "postgres") (eq .Values.jobs.postgres.mode "external") (not .Values.jobs.postgres.external.existingSecret) }}
{{- fail "jobs.postgres.mode external: set jobs.postgres.external.existingSecret (a Secret holding the DSN)" }}
{{- end }}
{{- if and .Values.eventing.trigger.enabled (ne (int .Values.sidecar.service.port) 80) }}
{{- fail "eventing.trigger.enabled: Knative resolves a Service subscriber to port 80, keep sidecar.service.port at 80" }}
{{- end }}
{{- end }}

{{/*
Data of the chart-made Secret (base64), as YAML. Given values win; otherwise the value already in
the cluster (lookup, so upgrades keep keys); otherwise a random one on first install. Computed
once per render and memoised, so the pod checksum matches the Secret actually rendered.
*/}}
{{- define "bark-tts.secretData" -}}
{{- if not (hasKey .Release "barkSecretData") }}
{{- $name := printf "%s-secrets" (include "bark-tts.fullname" .) }}
{{- $old := (lookup "v1" "Secret" .Release.Namespace $name).data | default dict }}
{{- $s := .Values.secrets }}
{{- $data := dict }}
{{- $random := list }}
{{- if $s.apiKeys }}
{{- $_ := set $data "api-keys" (join "\n" $s.apiKeys | b64enc) }}
{{- else if hasKey $old "api-keys" }}
{{- $_ := set $data "api-keys" (index $old "api-keys") }}
{{- else if .Values.auth.enabled }}
{{- $_ := set $data "api-keys" (randAlphaNum 40 | b64enc) }}
{{- $random = append $random "api-keys (secrets.apiKeys)" }}
{{- end }}
{{- if $s.webhookSecret }}
{{- $_ := set $data "webhook-secret" ($s.webhookSecret | b64enc) }}
{{- else if hasKey $old "webhook-secret" }}
{{- $_ := set $data "webhook-secret" (index $old "webhook-secret") }}
{{- else if .Values.sidecar.enabled }}
{{- $_ := set $data "webhook-secret" (randAlphaNum 48 | b64enc) }}
{{- $random = append $random "webhook-secret (secrets.webhookSecret)" }}
{{- end }}
{{- $pg := .Values.jobs.postgres.bundled }}
{{- if and $pg.password (include "bark-tts.bundledPostgres" .) }}
{{- $_ := set $data "postgres-password" ($pg.password | b64enc) }}
{{- else if hasKey $old "postgres-password" }}
{{- /* Kept even when unused now: PostgreSQL keeps the password its data folder was created with. */}}
{{- $_ := set $data "postgres-password" (index $old "postgres-password") }}
{{- else if include "bark-tts.bundledPostgres" . }}
{{- $_ := set $data "postgres-password" (randAlphaNum 32 | b64enc) }}
{{- $random = append $random "postgres-password (jobs.postgres.bundled.password)" }}
{{- end }}
{{- if $s.hfToken }}
{{- $_ := set $data "hf-token" ($s.hfToken | b64enc) }}
{{- else if hasKey $old "hf-token" }}
{{- $_ := set $data "hf-token" (index $old "hf-token") }}
{{- end }}
{{- if $s.adminApiKeys }}
{{- $_ := set $data "admin-api-keys" (join "\n" $s.adminApiKeys | b64enc) }}
{{- end }}
{{- include "bark-tts.secretsKeptOrFail" (list . $random) }}
{{- $_ := set .Release "barkSecretData" $data }}
{{- end }}
{{- toYaml (get .Release "barkSecretData") }}
{{- end }}
