{{/*
Issue #23 (voices as data): the model server's custom-voice store and admin keys, kept in this file
so the rest of the chart changes little.

BARK_VOICE_STORE: voices.store when given (a postgresql:// URL or a directory); else the job store's
PostgreSQL when the jobs use one (jobs.store postgres with the sidecar on), so every replica shares the
voices and sees a change within a second; else a directory in the container (one replica: voices are
lost with the pod).
*/}}
{{- define "bark-tts.voiceStoreEnv" -}}
{{- $v := .Values.voices }}
{{- $secretName := include "bark-tts.secretName" . }}
{{- if $v.store }}
- name: BARK_VOICE_STORE
  value: {{ $v.store | quote }}
{{- else if and .Values.sidecar.enabled (eq .Values.jobs.store "postgres") }}
# The jobs' database holds the voices too.
{{- include "bark-tts.jobsDatabaseEnv" (list . "BARK_VOICE_STORE") }}
{{- else }}
- name: BARK_VOICE_STORE
  value: /var/lib/bark-voices
{{- end }}
{{- range $key, $env := dict "maxBytes" "BARK_VOICE_MAX_BYTES" "maxPerKey" "BARK_MAX_VOICES_PER_KEY" }}
{{- $value := index $v $key }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ $env }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- if .Values.auth.enabled }}
# Admin keys may publish custom voices to every key (and act on any key's voice).
- name: BARK_ADMIN_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secretName }}
      key: admin-api-keys
      optional: true
{{- end }}
{{- end }}
