// Captions in step with playback: the segments of a run (from the server's timestamps) as a list,
// the one being spoken highlighted. A segment stays current from its start until the next one
// starts (through the pause after it). Each change of the highlight is also kept as [seconds, index]
// in #captions' data-trace, which the browser tests read to check the highlight against the clock.
const TRACE_LIMIT = 500;

export class Captions {
  constructor(list, box) {
    this.list = list;
    this.box = box;
    this.segments = [];
    this.current = -1;
    this.clock = null;
    this.frame = null;
  }

  reset() {
    this.stop();
    this.segments = [];
    this.current = -1;
    this.list.replaceChildren();
    this.list.dataset.trace = "[]";
    this.box.hidden = true;
  }

  /** Add segments as they come (`speakerOf(turn)`: a dialogue speaker's name, or null). */
  add(segments, speakerOf) {
    for (const segment of segments) {
      const item = document.createElement("li");
      item.dataset.start = String(segment.start_s);
      item.dataset.end = String(segment.end_s);
      const time = document.createElement("span");
      time.className = "at";
      time.textContent = clock(segment.start_s);
      item.append(time);
      const speaker = speakerOf(segment.turn);
      if (speaker) {
        const who = document.createElement("span");
        who.className = "who";
        who.textContent = speaker;
        item.append(who);
      }
      const text = document.createElement("span");
      text.className = "said";
      text.textContent = segment.text;
      item.append(text);
      item.title = segment.exact ? "exact times" : "times estimated within its chunk";
      this.list.append(item);
      this.segments.push(segment);
    }
    this.box.hidden = this.segments.length === 0;
  }

  /** Highlight the segment spoken at `seconds` of the audio. */
  show(seconds) {
    let index = -1;
    for (let i = 0; i < this.segments.length && this.segments[i].start_s <= seconds; i += 1) index = i;
    if (index === this.current) return;
    const items = this.list.children;
    if (this.current >= 0 && items[this.current]) {
      items[this.current].classList.remove("current");
      items[this.current].removeAttribute("aria-current");
    }
    this.current = index;
    if (index >= 0) {
      items[index].classList.add("current");
      items[index].setAttribute("aria-current", "true");
      items[index].scrollIntoView({ block: "nearest" });
    }
    const trace = JSON.parse(this.list.dataset.trace || "[]");
    if (trace.length < TRACE_LIMIT) trace.push([Math.round(seconds * 1000) / 1000, index]);
    this.list.dataset.trace = JSON.stringify(trace);
  }

  /** Follow `clock()` (seconds of audio played) every frame until stop(). */
  follow(clockFn) {
    this.stop();
    this.clock = clockFn;
    const tick = () => {
      this.show(this.clock());
      this.frame = requestAnimationFrame(tick);
    };
    tick();
  }

  stop() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
  }

  /** Keep the highlight with an <audio> element: every frame while it plays, and on every seek. */
  attach(player) {
    player.addEventListener("play", () => this.follow(() => player.currentTime));
    for (const name of ["pause", "ended"]) {
      player.addEventListener(name, () => {
        this.stop();
        this.show(player.currentTime);
      });
    }
    for (const name of ["seeked", "timeupdate"]) {
      player.addEventListener(name, () => {
        if (this.frame === null) this.show(player.currentTime);
      });
    }
  }
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}
