// Talking to the model server: the page's config, the voices, and the two synthesis routes.
// Every URL is relative to the page (/playground/), so a path prefix in front of the server works.
// The API key travels only in the Authorization header: never in a URL, never logged.

/** An HTTP error turned into words a person can act on. */
export class ApiError extends Error {
  constructor(status, title, detail) {
    super(`${title}: ${detail}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

const TITLES = {
  400: "The server rejected the request",
  401: "API key missing or not accepted",
  403: "Not allowed",
  404: "Not found",
  409: "Already taken",
  413: "The request is too large",
  499: "Request cancelled",
  500: "Generation failed on the server",
  503: "The server is busy or not ready",
  504: "The request timed out on the server",
};

const HINTS = {
  401: "Enter a valid key in the API key field.",
  504: "Try a shorter text, or ask the operator about request_timeout_s.",
};

/** The message from either error shape: ours ({"error": "..."}) or OpenAI's ({"error": {"message"}}). */
function messageOf(body) {
  const error = body && body.error;
  if (typeof error === "string") return error;
  if (error && typeof error.message === "string") return error.message;
  return "";
}

/** Read a non-2xx response into an ApiError, including Retry-After for a 503. */
export async function errorFrom(response) {
  let message = "";
  try {
    message = messageOf(await response.json());
  } catch {
    message = "";
  }
  const said = message || response.statusText || "no details";
  const parts = [/[.!?]$/.test(said) ? said : `${said}.`];
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 503) {
    parts.push(retryAfter ? `Retry after ${retryAfter} s.` : "Try again shortly.");
  } else if (HINTS[response.status]) {
    parts.push(HINTS[response.status]);
  }
  const title = TITLES[response.status] || `HTTP ${response.status}`;
  return new ApiError(response.status, `${title} (${response.status})`, parts.join(" "));
}

/** `headers` plus the user's key as a Bearer token, when there is one. */
function withKey(apiKey, headers) {
  return apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : headers;
}

function jsonHeaders(apiKey) {
  return withKey(apiKey, { "Content-Type": "application/json" });
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** The bounds, routes and formats the server accepts (built from its request models). */
export function loadConfig() {
  return getJson("config.json");
}

/** `{voices: [{name, language, language_name, custom?, own?, published?, description?}], aliases: {...}}`:
 * the presets, and with a key the custom voices it may use (its own and the published ones). */
export async function loadVoices(config, apiKey) {
  const response = await fetch(config.routes.voices, { headers: withKey(apiKey, { Accept: "application/json" }) });
  if (response.status === 401 && apiKey) return loadVoices(config, ""); // a wrong key still lists the presets
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** POST a speaker prompt (.npz) with its fields as multipart; resolves to the stored voice. */
export async function uploadVoice(config, form, apiKey) {
  const response = await fetch(config.routes.voices, { method: "POST", headers: withKey(apiKey, {}), body: form });
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** DELETE one of the key's custom voices. */
export async function deleteVoice(config, name, apiKey) {
  const url = `${config.routes.voices}/${encodeURIComponent(name)}`;
  const response = await fetch(url, { method: "DELETE", headers: withKey(apiKey, {}) });
  if (!response.ok) throw await errorFrom(response);
}

/** Whether the model has loaded (KServe's model status route). */
export async function modelReady(config) {
  try {
    const status = await getJson(`../v1/models/${encodeURIComponent(config.model)}`);
    return Boolean(status.ready);
  } catch {
    return false;
  }
}

/** POST the OpenAI route as an SSE stream with timestamps; resolves to the response (read it with speechEvents). */
export async function startSpeechStream(config, request, apiKey, signal) {
  const response = await fetch(config.routes.speech, {
    method: "POST",
    headers: jsonHeaders(apiKey),
    body: JSON.stringify({ ...request, response_format: config.stream_format, stream_format: "sse", timestamps: true }),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** The events of an SSE speech stream as they arrive: `speech.segment` (a sentence's times, just
 * before its chunk's audio), `speech.audio.delta` (base64 PCM), `speech.audio.done`. An `error`
 * event (a failure after the stream started) is thrown as an ApiError. */
export async function* speechEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data: "))
        .map((line) => line.slice(6))
        .join("\n");
      if (!data) continue;
      const event = JSON.parse(data);
      if (event.type === "error") {
        const status = event.error && event.error.code === "timeout" ? 504 : 500;
        throw new ApiError(status, `${TITLES[status]} (${status})`, messageOf(event) || "the stream failed");
      }
      yield event;
    }
  }
}

/** A request id for x-request-id: random hex (crypto.randomUUID needs HTTPS; this page may be on plain HTTP). */
export function newRequestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** How far the request sent with `requestId` is ({chunks_done, chunks_total, finished}); null when not known yet. */
export async function requestProgress(config, requestId, apiKey) {
  const url = config.routes.progress.replace("{request_id}", encodeURIComponent(requestId));
  const response = await fetch(url, { headers: withKey(apiKey, { Accept: "application/json" }) });
  return response.ok ? response.json() : null;
}

/** POST the v1 predict route (which takes the sampling settings); resolves to its one prediction. */
export async function predict(config, instance, apiKey, signal, requestId) {
  const response = await fetch(config.routes.predict, {
    method: "POST",
    headers: { ...jsonHeaders(apiKey), "x-request-id": requestId },
    body: JSON.stringify({ instances: [instance] }),
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const body = await response.json();
  return body.predictions[0];
}

/** base64 -> bytes, for the v1 route's audio field. */
export function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
