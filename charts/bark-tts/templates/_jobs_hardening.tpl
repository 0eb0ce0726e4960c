{{/*
Issue #22 (jobs that outlive their infrastructure): what the chart adds around the job sidecar.
Kept in this file so the rest of the chart changes little.
*/}}

{{/*
Generated secrets must be kept: `lookup` reads the chart's Secret on upgrade, but `helm template`, a
client-side dry run and GitOps tools render without a cluster, where every render would make a new
API key, webhook secret and database password (and the sidecars would lose the database). Without a
cluster (an empty list of Secrets) and with something to generate, fail and say what to set.
Argument: (list $ $random), $random naming what would be generated.
*/}}
{{- define "bark-tts.secretsKeptOrFail" -}}
{{- $ := index . 0 }}
{{- $random := index . 1 }}
{{- if and $random (not $.Values.secrets.generateWithoutCluster) (not (lookup "v1" "Secret" $.Release.Namespace "")) }}
{{- fail (printf "secrets: no cluster to read (helm template, a client-side dry run, GitOps), so these generated secrets would change at every render and running pods would lose their keys and the job database: %s. Set secrets.existingSecret to a Secret you manage (keys api-keys, webhook-secret, postgres-password; optional admin-api-keys, hf-token), or give each value, or set secrets.generateWithoutCluster=true for a throwaway render." (join ", " $random)) }}
{{- end }}
{{- end }}

{{/*
The sidecar's own env for #22: the model server's request limits (the sidecar checks them at intake, from
the same BARK_* settings the model container gets) and admin keys (the intake caps and result bound are
in the sidecar's values loop in inferenceservice.yaml).
*/}}
{{- define "bark-tts.sidecarJobsEnv" -}}
{{- with .Values.server.maxPromptChars }}
- name: BARK_MAX_PROMPT_CHARS
  value: {{ . | toString | quote }}
{{- end }}
{{- range .Values.server.extraEnv }}
{{- if regexMatch "^BARK_(MAX_PROMPT_CHARS|MAX_WORDS_PER_REQUEST|MAX_OUTPUT_SECONDS|SEMANTIC_TOKENS_PER_WORD|SEMANTIC_TOKENS_MIN|MIN_CHUNK_WORDS|MAX_CHUNK_WORDS|DEFAULT_CHUNK_WORDS)$" .name }}
- {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- if .Values.auth.enabled }}
- name: SIDECAR_ADMIN_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "bark-tts.secretName" . }}
      key: admin-api-keys
      optional: true
{{- end }}
{{- end }}

{{/*
A SQLite job file belongs to one process (the sidecar locks it): a rolling update would start the new pod
beside the old one on the same volume, and the new sidecar would refuse the file until the old pod is gone.
So with SQLite on a volume, RawDeployment replaces pods with Recreate (old pod stopped, then the new one).
*/}}
{{- define "bark-tts.sqliteStrategy" -}}
{{- if and (include "bark-tts.sqliteJobs" .) (not (include "bark-tts.serverless" .)) }}
deploymentStrategy:
  type: Recreate
{{- end }}
{{- end }}
