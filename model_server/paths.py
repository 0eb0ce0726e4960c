"""Route paths and the `route` label values of the metrics: spelled once, used by the routes, the
middleware that counts outcomes, the OpenAPI document, the playground and the error messages."""

from __future__ import annotations

#: KServe's v1 predict route (KServe registers it; we document and count it).
PREDICT_PATH = "/v1/models/{model_name}:predict"
#: OpenAI's speech route.
SPEECH_PATH = "/v1/audio/speech"
#: The voice list, and the same list under the model's own v1 path.
VOICES_PATH = "/v1/audio/voices"
MODEL_VOICES_PATH = "/v1/models/{model_name}/voices"
#: How far a request is (chunks done of chunks queued), by its x-request-id; under API keys.
REQUESTS_PREFIX = "/v1/requests/"
REQUEST_PROGRESS_PATH = REQUESTS_PREFIX + "{request_id}/progress"
PLAYGROUND_PATH = "/playground"
METRICS_PATH = "/metrics"
#: OpenAI's audio routes (speech, voices): their errors have OpenAI's shape.
OPENAI_AUDIO_PREFIX = "/v1/audio/"

#: The `route` label of bark_requests_total, bark_request_latency_seconds and the other per-route metrics.
V1_PREDICT_ROUTE = "v1_predict"
OPENAI_SPEECH_ROUTE = "openai_speech"
