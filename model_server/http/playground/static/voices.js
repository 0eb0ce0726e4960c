// Custom voices in the page: upload a speaker prompt (.npz), keep the voice of a take just heard,
// list the key's own voices and delete them. The voice list itself (presets, `random`, custom voices)
// is filled by playground.js; this module calls `refresh()` after every change so the list follows.
//
// "Keep this voice" keeps the tokens of the take's first chunk (`save_voice`): it sends that chunk's
// text again (from the take's segments) with the same voice, settings and seed, so the server makes
// exactly the same first chunk and stores its tokens. Takes are therefore always seeded: the page
// picks a seed when the field is empty and shows it with the result.
import { deleteVoice, newRequestId, predict, uploadVoice } from "./api.js";
import { removeButton } from "./widgets.js";

const $ = (id) => document.getElementById(id);

/** What a kept voice needs of a take: its first chunk (text, voice) and its settings, seed included. */
export function takeOf(segments, settings) {
  const first = segments.filter((segment) => segment.chunk === 0);
  if (!first.length) return null;
  return { text: first.map((segment) => segment.text).join(" "), voice: first[0].voice, settings };
}

export class VoiceShelf {
  /** `apiKey()`: the key typed in; `refresh(select)`: reload the voice list, then select `select`. */
  constructor(config, apiKey, refresh) {
    this.config = config;
    this.apiKey = apiKey;
    this.refresh = refresh;
    this.take = null;
    const language = $("upload-language");
    language.append(new Option("from the text (default English)", ""));
    for (const { code, name } of config.languages) language.append(new Option(`${name} (${code})`, code));
    $("upload-name").pattern = config.voice_name_pattern.slice(1, -1);
    $("upload-voice").addEventListener("click", () => this.upload());
    $("keep-voice").addEventListener("click", () => this.keep());
  }

  /** The key's own custom voices, each with a delete button; published ones are only listed. */
  show(listing) {
    const custom = listing.voices.filter((voice) => voice.custom);
    const list = $("custom-voices");
    list.replaceChildren(
      ...custom.map((voice) => {
        const row = document.createElement("li");
        row.dataset.voice = voice.name;
        const name = document.createElement("span");
        name.className = "voice-name";
        name.textContent = voice.name;
        const detail = document.createElement("span");
        detail.className = "muted small";
        detail.textContent = [voice.language_name, voice.published ? "published" : "", voice.description]
          .filter(Boolean)
          .join(" · ");
        row.append(name, detail);
        if (voice.own) {
          const remove = removeButton(`Delete ${voice.name}`, () => this.remove(voice.name));
          remove.dataset.voice = voice.name;
          row.append(remove);
        }
        return row;
      }),
    );
    $("custom-empty").hidden = custom.length > 0;
  }

  status(id, text, failed = false) {
    const line = $(id);
    line.textContent = text;
    line.classList.toggle("failed", failed);
    line.dataset.state = failed ? "error" : "done";
  }

  async upload() {
    const file = $("upload-file").files[0];
    if (!file) {
      this.status("upload-status", "Choose a speaker prompt (.npz) first.", true);
      return;
    }
    const form = new FormData();
    form.append("name", $("upload-name").value.trim());
    form.append("consent", $("upload-consent").value);
    if ($("upload-language").value) form.append("language", $("upload-language").value);
    if ($("upload-description").value.trim()) form.append("description", $("upload-description").value.trim());
    form.append("file", file, file.name);
    $("upload-voice").disabled = true;
    try {
      const voice = await uploadVoice(this.config, form, this.apiKey());
      $("upload-file").value = "";
      await this.refresh(voice.name);
      this.status("upload-status", `Uploaded ${voice.name} (${voice.semantic_tokens} tokens, ${voice.frames} frames).`);
    } catch (error) {
      this.status("upload-status", error.detail || String(error.message || error), true);
    } finally {
      $("upload-voice").disabled = false;
    }
  }

  async remove(name) {
    try {
      await deleteVoice(this.config, name, this.apiKey());
      await this.refresh(null);
      this.status("custom-status", `Deleted ${name}.`);
    } catch (error) {
      this.status("custom-status", error.detail || String(error.message || error), true);
    }
  }

  /** After a take: offer to keep its voice (null: nothing to keep, e.g. a failed take). */
  offer(take) {
    this.take = take;
    $("keep-box").hidden = take === null;
    $("keep-status").textContent = "";
    if (take) $("keep-from").textContent = take.voice === "random" ? "the random speaker you just heard" : take.voice;
  }

  async keep() {
    const take = this.take;
    const name = $("keep-name").value.trim();
    if (!take || !name) {
      this.status("keep-status", "Give the voice a name first.", true);
      return;
    }
    $("keep-voice").disabled = true;
    this.status("keep-status", "Keeping…");
    $("keep-status").dataset.state = "running";
    const instance = { prompt: take.text, voice: take.voice, ...take.settings, format: "wav", save_voice: { name } };
    try {
      const result = await predict(this.config, instance, this.apiKey(), undefined, newRequestId());
      await this.refresh(result.saved_voice);
      this.status("keep-status", `Kept as ${result.saved_voice}: it is chosen in the voice list.`);
    } catch (error) {
      this.status("keep-status", error.detail || String(error.message || error), true);
    } finally {
      $("keep-voice").disabled = false;
    }
  }
}
