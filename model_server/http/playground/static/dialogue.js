// The dialogue editor: speakers (a name and a voice each) and turns in order (a speaker and a text
// each). What it holds becomes the request's `turns`; every turn carries its speaker's voice.
import { removeButton } from "./widgets.js";

const $ = (id) => document.getElementById(id);
const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const STARTER = [
  [0, "Hi! Did you hear that the playground can speak a dialogue now?"],
  [1, "No, tell me more. Does each of us get a voice of our own?"],
  [0, "Yes. And the captions follow along as we speak."],
];

export class DialogueEditor {
  /** `voiceSelect`: the page's voice list, whose options each speaker's list copies. */
  constructor(voiceSelect, onChange) {
    this.voiceSelect = voiceSelect;
    this.onChange = onChange;
    this.speakers = []; // {id, name, voice}
    this.nextId = 0;
    $("add-speaker").addEventListener("click", () => {
      this.addSpeaker();
      this.changed();
    });
    $("add-turn").addEventListener("click", () => {
      const turns = this.turnRows();
      const last = turns.length ? Number(turns[turns.length - 1].querySelector("select").value) : null;
      // A new turn goes to the speaker after the last one: a back-and-forth needs no clicks.
      const index = this.speakers.findIndex((speaker) => speaker.id === last);
      const next = this.speakers[(index + 1) % this.speakers.length];
      this.addTurn(next.id, "").querySelector("textarea").focus();
      this.changed();
    });
  }

  /** Two speakers in two different voices of the default's language, and a short exchange. */
  start(defaultVoice) {
    const voices = [...this.voiceSelect.querySelectorAll("optgroup:not([data-aliases]) option")].map((o) => o.value);
    const language = (/^v2\/([a-z]+)_/.exec(defaultVoice) || [])[1];
    const other = voices.find((v) => v !== defaultVoice && v.startsWith(`v2/${language}_`)) || voices[0];
    const ids = [this.addSpeaker(defaultVoice), this.addSpeaker(other)];
    for (const [speaker, text] of STARTER) this.addTurn(ids[speaker], text);
  }

  changed() {
    this.refreshSpeakerChoices();
    this.onChange();
  }

  /** A speaker's voice list: the page's, each option saying its group too ("English · Speaker 3"),
   * since a closed list shows only the option. */
  fillVoiceList(list) {
    const copy = this.voiceSelect.cloneNode(true);
    for (const group of copy.querySelectorAll("optgroup:not([data-aliases])")) {
      for (const option of group.children) option.textContent = `${group.label} · ${option.textContent}`;
    }
    list.replaceChildren(...copy.children);
  }

  /** The page's voice list changed (a custom voice added or deleted): every speaker's list follows,
   * keeping its choice while it still exists. */
  voicesChanged() {
    for (const list of $("speakers").querySelectorAll("select.speaker-voice")) {
      const chosen = list.value;
      this.fillVoiceList(list);
      if ([...list.options].some((option) => option.value === chosen)) list.value = chosen;
      list.dispatchEvent(new Event("change"));
    }
  }

  addSpeaker(voice = this.voiceSelect.value) {
    const id = this.nextId;
    this.nextId += 1;
    const speaker = { id, name: `Speaker ${LETTERS[id % LETTERS.length]}`, voice };
    this.speakers.push(speaker);
    const row = document.createElement("li");
    row.className = "speaker";
    row.dataset.speaker = String(id);
    const name = document.createElement("input");
    name.type = "text";
    name.value = speaker.name;
    name.maxLength = 40;
    name.setAttribute("aria-label", "Speaker name");
    name.addEventListener("input", () => {
      speaker.name = name.value.trim() || `Speaker ${LETTERS[id % LETTERS.length]}`;
      this.refreshSpeakerChoices();
    });
    const voiceList = document.createElement("select");
    voiceList.className = "speaker-voice";
    this.fillVoiceList(voiceList);
    voiceList.value = voice;
    voiceList.setAttribute("aria-label", `Voice of ${speaker.name}`);
    voiceList.addEventListener("change", () => {
      speaker.voice = voiceList.value;
    });
    const remove = removeButton("Remove this speaker and their turns", () => {
      if (this.speakers.length <= 1) return;
      this.speakers = this.speakers.filter((s) => s !== speaker);
      row.remove();
      for (const turn of this.turnRows()) if (Number(turn.querySelector("select").value) === id) turn.remove();
      this.changed();
    });
    row.append(name, voiceList, remove);
    $("speakers").append(row);
    return id;
  }

  addTurn(speakerId, text) {
    const row = document.createElement("li");
    row.className = "turn";
    const who = document.createElement("select");
    who.setAttribute("aria-label", "Who speaks this turn");
    const said = document.createElement("textarea");
    said.rows = 2;
    said.value = text;
    said.setAttribute("aria-label", "What they say");
    said.addEventListener("input", () => this.onChange());
    const remove = removeButton("Remove this turn", () => {
      row.remove();
      this.onChange();
    });
    row.append(who, said, remove);
    $("turns").append(row);
    this.refreshSpeakerChoices();
    who.value = String(speakerId);
    return row;
  }

  refreshSpeakerChoices() {
    for (const row of this.turnRows()) {
      const select = row.querySelector("select");
      const chosen = select.value;
      select.replaceChildren(...this.speakers.map((s) => new Option(s.name, String(s.id))));
      if (this.speakers.some((s) => String(s.id) === chosen)) select.value = chosen;
    }
    for (const row of $("speakers").children) {
      row.querySelector("button").disabled = this.speakers.length <= 1;
    }
  }

  turnRows() {
    return [...$("turns").children];
  }

  /** The request's `turns`, and who says each (for the captions). */
  turns() {
    return this.turnRows().map((row) => {
      const speaker = this.speakers.find((s) => String(s.id) === row.querySelector("select").value);
      return { voice: speaker.voice, text: row.querySelector("textarea").value, speaker: speaker.name };
    });
  }

  /** Characters over all turns (the server counts them against max_prompt_chars). */
  characters() {
    return this.turnRows().reduce((sum, row) => sum + row.querySelector("textarea").value.length, 0);
  }
}
