// The playground page: wires the form to the API. Every bound comes from config.json (the server's
// request models), so nothing here repeats a limit. Timestamps of each run are kept as data-*
// attributes on #result-card (milliseconds since the click), which the browser tests read.
// Every run asks for timestamps: the captions under the player follow the audio as it plays.
import {
  ApiError,
  decodeBase64,
  loadConfig,
  loadVoices,
  modelReady,
  newRequestId,
  predict,
  requestProgress,
  speechEvents,
  startSpeechStream,
} from "./api.js";
import { PcmStreamPlayer, wavBlob } from "./audio.js";
import { Captions } from "./captions.js";
import { DialogueEditor } from "./dialogue.js";
import { VoiceShelf, takeOf } from "./voices.js";

const KEY_STORAGE = "bark-playground-api-key";
const TEMPERATURES = ["semantic_temperature", "coarse_temperature", "fine_temperature"];
// A whole synthesis asks how far it is: soon after it starts, then every half second.
const PROGRESS_FIRST_POLL_MS = 200;
const PROGRESS_POLL_MS = 500;
const $ = (id) => document.getElementById(id);

const state = {
  config: null,
  audioContext: null,
  player: null,
  controller: null,
  objectUrl: null,
  chosenFormat: null, // the format picked for whole files, while a stream shows PCM
  streamShown: false,
  dialogue: null, // the DialogueEditor, once the voices are known
  captions: null,
  listing: null, // the last voice list (presets, aliases, custom voices)
  shelf: null, // the custom voices' card (voices.js)
};

// -- setup -------------------------------------------------------------------------------------

function setRange(input, bounds, step, suffix = "", decimals = 2) {
  input.min = bounds.minimum;
  input.max = bounds.maximum;
  input.step = step;
  input.value = bounds.default;
  const output = document.querySelector(`output[for="${input.id}"]`);
  const show = () => {
    output.textContent = `${Number(input.value).toFixed(decimals)}${suffix}`;
  };
  input.addEventListener("input", show);
  show();
}

function applyConfig(config) {
  const sampling = config.sampling;
  $("do_sample").checked = sampling.do_sample.default;
  for (const name of TEMPERATURES) setRange($(name), sampling[name], 0.01);
  $("seed").min = sampling.seed.minimum;
  $("seed").max = sampling.seed.maximum;
  const chunk = $("batch_chunk_size");
  chunk.min = sampling.batch_chunk_size.minimum;
  chunk.max = sampling.batch_chunk_size.maximum;
  chunk.placeholder = `${sampling.batch_chunk_size.default} (${chunk.min}–${chunk.max})`;
  setRange($("speed"), config.speed, 0.05, "×");
  setRange($("turn_pause_ms"), config.turn_pause_ms, 50, " ms", 0);
  const format = $("format");
  for (const { name } of config.formats) format.append(new Option(name, name, false, name === config.default_format));
  $("model-name").textContent = config.model;
  $("key-card").hidden = !config.auth_required;
}

function voiceLabel(name) {
  const match = /^(v2\/)?([a-z]+)_speaker_(\d+)$/.exec(name);
  return match ? `Speaker ${match[3]}${match[1] ? "" : " (v1)"}` : name;
}

function fillVoices(listing, selected) {
  state.listing = listing;
  const select = $("voice");
  select.replaceChildren();
  const groups = new Map();
  for (const voice of listing.voices.filter((v) => !v.custom)) {
    const language = voice.language_name || voice.language || "Other";
    if (!groups.has(language)) groups.set(language, []);
    groups.get(language).push(voice.name);
  }
  const custom = listing.voices.filter((voice) => voice.custom);
  if (custom.length) {
    const group = document.createElement("optgroup");
    group.label = "Custom voices";
    group.dataset.custom = "true";
    for (const voice of custom) group.append(new Option(voice.own ? voice.name : `${voice.name} (published)`, voice.name));
    select.append(group);
  }
  for (const language of [...groups.keys()].sort()) {
    const group = document.createElement("optgroup");
    group.label = language;
    for (const name of groups.get(language)) group.append(new Option(voiceLabel(name), name));
    select.append(group);
  }
  const fresh = document.createElement("optgroup");
  fresh.label = "New speaker";
  fresh.append(new Option("Random: Bark makes one up", listing.random || "random"));
  select.append(fresh);
  const aliases = Object.entries(listing.aliases || {});
  if (aliases.length) {
    const group = document.createElement("optgroup");
    group.label = "OpenAI voice names";
    group.dataset.aliases = "true";
    for (const [alias, preset] of aliases) group.append(new Option(`${alias} → ${preset}`, alias));
    select.append(group);
  }
  select.value = [...select.options].some((option) => option.value === selected) ? selected : state.config.default_voice;
  select.disabled = false;
  describeVoice();
  const languages = groups.size;
  $("voice-count").textContent =
    `${listing.voices.length - custom.length} voices · ${languages} language${languages === 1 ? "" : "s"}`;
  $("custom-count").textContent = custom.length ? String(custom.length) : "";
  if (state.shelf) state.shelf.show(listing);
  if (state.dialogue) state.dialogue.voicesChanged();
}

function describeVoice() {
  if (dialogueOn() || !state.listing) return;
  const select = $("voice");
  const preset = state.listing.aliases?.[select.value] || select.value;
  const voice = state.listing.voices.find((v) => v.name === preset);
  let text = preset;
  if (preset === (state.listing.random || "random")) text = "No prompt: a new speaker each take (the same one with the same seed).";
  else if (voice && voice.custom) text = [`${voice.name} · custom`, voice.language_name, voice.description].filter(Boolean).join(" · ");
  else if (voice) text = `${voice.name} · ${voice.language_name || voice.language}`;
  $("voice-detail").textContent = text;
}

/** The voice list again (with the key's custom voices), then `select` chosen in it. */
async function refreshVoices(select = $("voice").value) {
  fillVoices(await loadVoices(state.config, apiKey()), select || $("voice").value);
}

function dialogueOn() {
  return $("dialogue-mode").checked && state.dialogue !== null;
}

function updateCount() {
  const max = state.config ? state.config.max_prompt_chars : 0;
  const length = dialogueOn() ? state.dialogue.characters() : $("text").value.length;
  if (dialogueOn()) {
    const turns = state.dialogue.turnRows().length;
    $("turn-count").textContent = `${turns} / ${state.config.max_turns}`;
    $("turn-count").classList.toggle("over", turns > state.config.max_turns);
  }
  $("char-count").textContent = `${length.toLocaleString()} / ${max.toLocaleString()} characters`;
  $("char-count").classList.toggle("over", max > 0 && length > max);
  $("char-meter").value = max ? Math.min(1, length / max) : 0;
}

function updateMode() {
  const streaming = $("stream").checked;
  const format = $("format");
  // A stream is always PCM (Web Audio plays raw samples); the chosen format comes back when it is off.
  if (state.config && streaming !== state.streamShown) {
    if (streaming) state.chosenFormat = format.value;
    format.value = streaming ? state.config.stream_format : state.chosenFormat || state.config.default_format;
    state.streamShown = streaming;
  }
  format.disabled = streaming;
  $("speed").disabled = !streaming;
  $("speed-field").classList.toggle("off", !streaming);
  $("sampling-note").textContent = streaming
    ? "Sent to the OpenAI route as Bark extensions to its body."
    : "Sent to the KServe v1 predict route.";
  $("output-note").textContent = streaming
    ? "Streams play as raw PCM through Web Audio; the whole take is offered as WAV afterwards."
    : "Speed applies to streamed requests (the OpenAI route).";
}

function updateDialogueMode() {
  const on = $("dialogue-mode").checked;
  $("text").hidden = on;
  $("dialogue").hidden = !on;
  $("voice-detail").textContent = on ? "In a dialogue each speaker has a voice of their own; this one is only the default." : "";
  if (!on) describeVoice();
  updateCount();
}

function setServerStatus(stateName, text) {
  $("server-status").dataset.state = stateName;
  $("server-status-text").textContent = text;
}

// -- a run -------------------------------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

function showError(error) {
  const isApi = error instanceof ApiError;
  $("error-title").textContent = isApi ? error.title : "Could not reach the server";
  $("error-detail").textContent = isApi ? error.detail : String(error.message || error);
  $("error").hidden = false;
  $("placeholder").hidden = true;
  $("result-card").dataset.errorStatus = isApi ? String(error.status) : "network";
}

function resetResult() {
  $("error").hidden = true;
  $("progress").hidden = true;
  $("timing").hidden = true;
  $("download").hidden = true;
  $("route-note").hidden = true;
  $("placeholder").hidden = false;
  if (state.shelf) state.shelf.offer(null);
  $("player").pause();
  $("player").removeAttribute("src");
  $("player").hidden = true;
  state.captions.reset();
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = null;
  const card = $("result-card");
  for (const key of Object.keys(card.dataset)) delete card.dataset[key];
}

function mark(name, startedAt) {
  $("result-card").dataset[name] = String(Math.round((performance.now() - startedAt) * 10) / 10);
}

function showAudio(blob, fileName, autoplay) {
  state.objectUrl = URL.createObjectURL(blob);
  const player = $("player");
  player.src = state.objectUrl;
  player.hidden = false;
  $("placeholder").hidden = true;
  const link = $("download");
  link.href = state.objectUrl;
  link.download = fileName;
  link.textContent = `Download ${fileName.split(".").pop().toUpperCase()}`;
  link.hidden = false;
  if (autoplay) player.play().catch(() => {});
}

function showTiming(firstMs, totalMs, audioSeconds) {
  const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;
  $("t-first").textContent = seconds(firstMs);
  $("t-total").textContent = seconds(totalMs);
  $("t-audio").textContent = `${audioSeconds.toFixed(2)} s`;
  const rtf = audioSeconds > 0 ? totalMs / 1000 / audioSeconds : Infinity;
  $("t-rtf").textContent = Number.isFinite(rtf) ? `${rtf.toFixed(2)}×` : "–";
  $("t-rtf").title = "generation time ÷ audio duration: below 1 is faster than real time";
  $("timing").hidden = false;
}

function fileNameFor(voice, extension) {
  const name = dialogueOn() ? "dialogue" : voice.replace(/[^a-z0-9]+/gi, "_");
  return `bark-${name}.${extension}`;
}

/** What is said: a dialogue's turns (and who says each, for the captions), or the text. */
function spoken() {
  if (!dialogueOn()) return { text: $("text").value, turns: null, speakers: [] };
  const turns = state.dialogue.turns();
  return {
    text: null,
    turns: turns.map(({ voice, text }) => ({ voice, text })),
    speakers: turns.map((turn) => turn.speaker),
    turn_pause_ms: Number($("turn_pause_ms").value),
  };
}

/** The request fields of `spoken()`: `turns` and `turn_pause_ms`, or the text under `textField`. */
function spokenFields(said, textField) {
  return said.turns ? { turns: said.turns, turn_pause_ms: said.turn_pause_ms } : { [textField]: said.text };
}

/** Bark's sampling settings as both routes take them (OpenAI's as extensions to its body). A sampled
 * take always has a seed (a fresh one when the field is empty), so its voice can be kept afterwards. */
function samplingSettings() {
  const settings = { do_sample: $("do_sample").checked };
  for (const name of TEMPERATURES) settings[name] = Number($(name).value);
  if ($("seed").value !== "") settings.seed = Number($("seed").value);
  else if (settings.do_sample) settings.seed = crypto.getRandomValues(new Uint32Array(1))[0];
  if ($("batch_chunk_size").value !== "") settings.batch_chunk_size = Number($("batch_chunk_size").value);
  if ($("continuity").checked) settings.continuity = "previous";
  return settings;
}

/** The route note's end: the seed that repeats the take. */
function seedNote(settings) {
  return settings.seed === undefined ? " Greedy: repeatable." : ` Seed ${settings.seed}.`;
}

async function runStream(startedAt, signal, settings) {
  const config = state.config;
  const voice = $("voice").value;
  const said = spoken();
  const request = {
    model: config.model,
    voice,
    speed: Number($("speed").value),
    ...spokenFields(said, "input"),
    ...settings,
  };
  const response = await startSpeechStream(config, request, apiKey(), signal);
  const player = new PcmStreamPlayer(state.audioContext, config.sample_rate);
  state.player = player;
  const card = $("result-card");
  let pieces = 0;
  let firstMs = null;
  for await (const event of speechEvents(response)) {
    if (event.type === "speech.segment") {
      // A chunk's sentences come just before its audio: the captions are there when it plays.
      state.captions.add([event], (turn) => said.speakers[turn] || null);
      continue;
    }
    if (event.type !== "speech.audio.delta") continue;
    const value = decodeBase64(event.audio);
    if (value.byteLength === 0) continue;
    mark("lastDataMs", startedAt);
    card.dataset.playedBeforeLastData = player.playedSeconds.toFixed(3);
    pieces += 1;
    if (player.push(value) > 0 && firstMs === null) {
      mark("firstAudioMs", startedAt);
      card.dataset.audioContextState = state.audioContext.state;
      firstMs = performance.now() - startedAt;
      card.dataset.captionsAtFirstAudio = String(state.captions.segments.length);
      state.captions.follow(() => player.positionSeconds);
    }
  }
  mark("doneMs", startedAt);
  card.dataset.pieces = String(pieces);
  const totalMs = performance.now() - startedAt;
  showTiming(firstMs ?? totalMs, totalMs, player.seconds);
  showAudio(player.toWav(), fileNameFor(voice, "wav"), false);
  // The captions follow the stream until it has played out; then the player's own clock.
  const left = Math.max(0, player.seconds - player.positionSeconds);
  setTimeout(() => state.captions.stop(), left * 1000 + 250);
  $("route-note").textContent =
    `Streamed from POST /v1/audio/speech in ${pieces} pieces as PCM (server-sent events).${seedNote(settings)}`;
  $("route-note").hidden = false;
  state.shelf.offer(takeOf(state.captions.segments, settings));
}

function showProgress(progress) {
  const total = progress.chunks_total;
  $("progress-bar").max = Math.max(total, 1);
  $("progress-bar").value = progress.chunks_done;
  $("progress-text").textContent = `Generating: ${progress.chunks_done} of ${total} chunk${total === 1 ? "" : "s"}`;
  $("progress").hidden = false;
  $("placeholder").hidden = true;
  const card = $("result-card");
  card.dataset.progressPolls = String(Number(card.dataset.progressPolls || 0) + 1);
  card.dataset.progressShown = `${progress.chunks_done}/${total}`;
}

/** Poll the progress of `requestId` until the returned function is called (the request ended). */
function watchProgress(requestId) {
  let stopped = false;
  let timer = null;
  const poll = async () => {
    const progress = await requestProgress(state.config, requestId, apiKey()).catch(() => null);
    if (stopped) return;
    if (progress && !progress.finished) showProgress(progress);
    timer = setTimeout(poll, PROGRESS_POLL_MS);
  };
  timer = setTimeout(poll, PROGRESS_FIRST_POLL_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
    $("progress").hidden = true;
  };
}

async function runWhole(startedAt, signal, settings) {
  const config = state.config;
  const voice = $("voice").value;
  const said = spoken();
  const instance = {
    ...spokenFields(said, "prompt"),
    voice,
    format: $("format").value,
    timestamps: true,
    ...settings,
  };
  const requestId = newRequestId();
  const stopWatching = watchProgress(requestId);
  let result;
  try {
    result = await predict(config, instance, apiKey(), signal, requestId);
  } finally {
    stopWatching();
  }
  mark("firstAudioMs", startedAt);
  mark("doneMs", startedAt);
  const totalMs = performance.now() - startedAt;
  const bytes = decodeBase64(result.audio);
  const info = config.formats.find((f) => f.name === result.format);
  // <audio> cannot play headerless PCM: it plays as WAV, while the download stays the raw file.
  const playable = result.format === "pcm" ? wavBlob([bytes], result.sample_rate) : new Blob([bytes], { type: info.content_type });
  state.captions.add(result.segments || [], (turn) => said.speakers[turn] || null);
  showAudio(playable, fileNameFor(voice, result.format === "pcm" ? "wav" : result.format), true);
  showTiming(totalMs, totalMs, result.duration_s);
  $("route-note").textContent = `From POST ${config.routes.predict.replace("..", "")} (${result.chunks} chunk${result.chunks === 1 ? "" : "s"}, ${result.sample_rate} Hz).${seedNote(settings)}`;
  $("route-note").hidden = false;
  state.shelf.offer(takeOf(result.segments || [], settings));
}

async function generate() {
  resetResult();
  const card = $("result-card");
  card.dataset.state = "running";
  $("generate").disabled = true;
  $("stop").disabled = false;
  // Created and resumed inside the click, so the browser lets it play.
  state.audioContext = state.audioContext || new AudioContext();
  state.audioContext.resume().catch(() => {});
  state.controller = new AbortController();
  const startedAt = performance.now();
  const settings = samplingSettings();
  try {
    if ($("stream").checked) await runStream(startedAt, state.controller.signal, settings);
    else await runWhole(startedAt, state.controller.signal, settings);
    card.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      card.dataset.state = "stopped";
    } else {
      showError(error);
      card.dataset.state = "error";
    }
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
    state.controller = null;
  }
}

function stop() {
  if (state.controller) state.controller.abort();
  if (state.player) state.player.stop();
  state.captions.stop();
}

async function start() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  let keyTimer = null;
  keyInput.addEventListener("input", () => {
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    // Another key, other custom voices: list them once the typing pauses.
    clearTimeout(keyTimer);
    keyTimer = setTimeout(() => state.config && refreshVoices().catch(() => {}), 300);
  });
  state.captions = new Captions($("captions"), $("captions-box"));
  state.captions.attach($("player"));
  $("text").addEventListener("input", updateCount);
  $("dialogue-mode").addEventListener("change", updateDialogueMode);
  $("stream").addEventListener("change", updateMode);
  $("generate").addEventListener("click", generate);
  $("voice").addEventListener("change", describeVoice);
  $("stop").addEventListener("click", stop);
  updateMode();
  try {
    state.config = await loadConfig();
    applyConfig(state.config);
    updateCount();
    updateMode();
    state.shelf = new VoiceShelf(state.config, apiKey, refreshVoices);
    await refreshVoices(state.config.default_voice);
    state.dialogue = new DialogueEditor($("voice"), updateCount);
    state.dialogue.start(state.config.default_voice);
    updateDialogueMode();
    const ready = await modelReady(state.config);
    setServerStatus(ready ? "ready" : "down", `${state.config.model} · ${ready ? "ready" : "not ready"}`);
    $("generate").disabled = false;
    document.body.dataset.ready = "true";
  } catch (error) {
    setServerStatus("down", "unavailable");
    showError(error);
  }
}

start();
