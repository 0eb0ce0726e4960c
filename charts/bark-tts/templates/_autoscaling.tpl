{{/*
Autoscaling and shutdown: who scales the predictor and on what, where the sidecar reaches its model,
how long a pod may take to stop. docs/SCALING.md explains the numbers; docs/DEPLOY.md the choices.
*/}}

{{/* RawDeployment scaled by KEDA (autoscaling.rawAutoscalerClass keda). */}}
{{- define "bark-tts.keda" -}}
{{- if and (not (include "bark-tts.serverless" .)) (eq .Values.autoscaling.rawAutoscalerClass "keda") }}true{{ end }}
{{- end }}

{{/* KEDA also counts the jobs in the shared PostgreSQL store (and so can wake a pod from zero). */}}
{{- define "bark-tts.kedaJobTrigger" -}}
{{- if and (include "bark-tts.keda" .) .Values.autoscaling.keda.jobStoreTrigger .Values.sidecar.enabled (eq .Values.jobs.store "postgres") }}true{{ end }}
{{- end }}

{{/*
KServe's serving.kserve.io/autoscalerClass. KServe builds its KEDA ScaledObject from
autoScaling.metrics (Prometheus, Graphite, OpenTelemetry and resource triggers only) and rewrites it
on every reconcile, so a PostgreSQL trigger cannot live there: with the job-store trigger the chart
renders the ScaledObject (keda.yaml) and tells KServe `external` (no HPA, no ScaledObject, the
Deployment's replicas left to KEDA).
*/}}
{{- define "bark-tts.autoscalerClass" -}}
{{- if include "bark-tts.kedaJobTrigger" . }}external{{ else }}{{ .Values.autoscaling.rawAutoscalerClass }}{{ end }}
{{- end }}

{{/* KServe names a RawDeployment predictor's Deployment <isvc>-predictor; its pods <deployment>-<hash>-<id>. */}}
{{- define "bark-tts.predictorDeployment" -}}
{{- printf "%s-predictor" (include "bark-tts.fullname" .) }}
{{- end }}

{{/*
The KEDA Prometheus query: chunks waiting in every predictor pod's queue plus the chunks its engine
is generating (the rows), summed over the pods. With the AverageValue target KEDA gives it, the
replicas wanted are this sum / autoscaling.chunksPerPod. `max by (pod)` counts a pod once when
both a PodMonitor and a ServiceMonitor scrape it.
*/}}
{{- define "bark-tts.kedaQuery" -}}
{{- $sel := printf "namespace=%q, pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" (include "bark-tts.predictorDeployment" .)) }}
{{- printf "sum(max by (pod) (bark_queue_depth{%s} + bark_inflight_chunks{%s}))" $sel $sel }}
{{- end }}

{{/*
KServe's KEDA integration (class keda): the Prometheus trigger KServe puts in its ScaledObject. KServe
passes `value` as the trigger's threshold without a metricType, so KEDA applies its default,
AverageValue: the threshold is per pod. Nothing with class external (keda.yaml has the trigger).
*/}}
{{- define "bark-tts.kserveKedaMetrics" -}}
{{- if eq (include "bark-tts.autoscalerClass" .) "keda" }}
autoScaling:
  metrics:
    - type: External
      external:
        metric:
          backend: prometheus
          serverAddress: {{ .Values.autoscaling.keda.prometheusAddress | quote }}
          query: {{ include "bark-tts.kedaQuery" . | quote }}
        target:
          type: Value
          value: {{ int .Values.autoscaling.chunksPerPod }}
{{- end }}
{{- end }}

{{/*
The KEDA PostgreSQL query on the sidecars' job store (webhook_sidecar/migrations.py): jobs that need
the model (queued, or running on some pod), and at least 1 while any result still waits for its
webhook, since only a running sidecar delivers it. The WHERE clause is the union of the store's
partial indexes (queued; in flight; deliverable), so the poll does not read finished jobs.
*/}}
{{- define "bark-tts.jobsQuery" -}}
SELECT GREATEST(COUNT(*) FILTER (WHERE state IN ('queued', 'running')), LEAST(COUNT(*), 1)) FROM bark_jobs WHERE state = 'queued' OR in_flight OR (state IN ('succeeded', 'failed', 'delivering') AND NOT in_flight)
{{- end }}

{{/*
The sidecar calls its model through Knative's queue-proxy (port 8012, in front of port 8080 in every
Serverless pod) so that job calls count as in-flight requests for the Knative autoscaler and hold a
pod that is draining. RawDeployment has no queue-proxy: the model's own port.
*/}}
{{- define "bark-tts.sidecarModelUrl" -}}
{{- $port := ternary 8012 8080 (eq (include "bark-tts.serverless" .) "true") }}
{{- printf "http://127.0.0.1:%d/v1/models/%s:predict" $port .Values.model.name }}
{{- end }}

{{/*
SIDECAR_CONCURRENCY when sidecar.concurrency is null: as many jobs at once as the autoscaler
sizes a pod for (its Knative concurrency target, or KEDA's jobsPerPod), so a job backlog fills each
pod up to the target and the autoscaler adds pods; two jobs per pod would never look busy. Empty
otherwise (the sidecar's own default, 2).
*/}}
{{- define "bark-tts.defaultSidecarConcurrency" -}}
{{- if kindIs "invalid" .Values.sidecar.concurrency }}
{{- if include "bark-tts.kedaJobTrigger" . }}{{ int .Values.autoscaling.keda.jobsPerPod }}
{{- else if and (include "bark-tts.serverless" .) (eq (include "bark-tts.scaleMetric" .) "concurrency") }}{{ include "bark-tts.scaleTarget" . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Seconds a pod may need to stop after SIGTERM: the server's drain of in-flight requests, then the
sidecar's drain of running jobs, its HTTP shutdown and the hand-back of what it still holds (taken
as one after the other, so no ordering between the containers is assumed), plus process exit.
*/}}
{{- define "bark-tts.drainSeconds" -}}
{{- $d := .Values.shutdown }}
{{- $sidecar := 0 }}
{{- if .Values.sidecar.enabled }}
{{- $sidecar = add $d.sidecarDrainSeconds $d.sidecarHandBackSeconds }}
{{- end }}
{{- add $d.serverDrainSeconds $sidecar $d.exitSeconds }}
{{- end }}

{{/* PodDisruptionBudget: null means on whenever there can be more than one replica. */}}
{{- define "bark-tts.pdb" -}}
{{- $on := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $on }}{{ if gt (int .Values.autoscaling.maxReplicas) 1 }}true{{ end }}
{{- else if $on }}true{{ end }}
{{- end }}

{{/* Cross-field rules of autoscaling and shutdown (the rest are in bark-tts.validate). */}}
{{- define "bark-tts.validateAutoscaling" -}}
{{- $a := .Values.autoscaling }}
{{- if include "bark-tts.keda" . }}
{{- if or $a.scaleMetric (not (kindIs "invalid" $a.scaleTarget)) }}
{{- fail "autoscaling.scaleMetric and scaleTarget are for rawAutoscalerClass hpa: keda scales on autoscaling.chunksPerPod (and jobsPerPod)" }}
{{- end }}
{{- end }}
{{- if and $a.scaleToZero (not (include "bark-tts.serverless" .)) (not (include "bark-tts.kedaJobTrigger" .)) }}
{{- fail "autoscaling.scaleToZero in RawDeployment needs rawAutoscalerClass keda with the job-store trigger (sidecar.enabled, jobs.store postgres, keda.jobStoreTrigger): only queued jobs can wake a pod there" }}
{{- end }}
{{- if include "bark-tts.serverless" . }}
{{- /* Knative sets terminationGracePeriodSeconds to the revision timeout, and its queue-proxy first waits 30 s without new requests. */}}
{{- $needed := add 30 (include "bark-tts.drainSeconds" .) }}
{{- if lt (int .Values.requestTimeoutSeconds) (int $needed) }}
{{- fail (printf "requestTimeoutSeconds %d is shorter than a Serverless pod's shutdown (%d s: queue-proxy's 30 s drain plus shutdown.*; Knative uses the timeout as the grace period): raise it or shorten shutdown.*" (int .Values.requestTimeoutSeconds) (int $needed)) }}
{{- end }}
{{- end }}
{{- range $c := list (dict "env" .Values.server.extraEnv "names" (list "BARK_SHUTDOWN_GRACE_S")) (dict "env" .Values.sidecar.extraEnv "names" (list "SIDECAR_GRACE_PERIOD_S")) }}
{{- range $c.env }}
{{- if has .name $c.names }}
{{- fail (printf "%s in extraEnv would outlast the pod's grace period: set shutdown.* instead (the chart sizes terminationGracePeriodSeconds from it)" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
