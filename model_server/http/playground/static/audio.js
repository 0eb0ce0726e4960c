// Playing a PCM stream as it arrives (Web Audio), and wrapping PCM in a WAV file for <audio>.
// The stream is raw 16-bit little-endian mono at the model's sample rate: each network piece is
// converted and scheduled right after the previous one, so playback starts with the first piece.

/** A WAV file (44-byte header + 16-bit mono samples) around PCM bytes. */
export function wavBlob(pcmChunks, sampleRate) {
  const dataBytes = pcmChunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (offset, text) => [...text].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // byte rate
  header.setUint16(32, 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Blob([header.buffer, ...pcmChunks], { type: "audio/wav" });
}

/** Schedules PCM pieces back to back on an AudioContext as they arrive. */
export class PcmStreamPlayer {
  constructor(context, sampleRate) {
    this.context = context;
    this.sampleRate = sampleRate;
    this.carry = null; // an odd trailing byte waits for the next piece
    this.chunks = []; // the whole take, for the WAV afterwards
    this.samples = 0;
    this.sources = [];
    this.nextStart = 0;
    this.firstStart = null; // AudioContext time of the first sample
    this.scheduled = []; // {start, offset, duration}: where each piece sits on the clock and in the take
  }

  /** Queue a piece of the stream; returns how many samples it held. */
  push(piece) {
    let bytes = piece;
    if (this.carry !== null) {
      bytes = new Uint8Array(piece.byteLength + 1);
      bytes[0] = this.carry;
      bytes.set(piece, 1);
      this.carry = null;
    }
    const even = bytes.byteLength - (bytes.byteLength % 2);
    if (even < bytes.byteLength) this.carry = bytes[even];
    const count = even / 2;
    if (count === 0) return 0;
    const pcm = bytes.slice(0, even);
    this.chunks.push(pcm);
    const view = new DataView(pcm.buffer);
    const floats = new Float32Array(count);
    for (let i = 0; i < count; i += 1) floats[i] = view.getInt16(i * 2, true) / 32768;
    const buffer = this.context.createBuffer(1, count, this.sampleRate);
    buffer.copyToChannel(floats, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    // A little lead keeps the first piece from starting in the past; later ones follow seamlessly.
    const start = Math.max(this.nextStart, this.context.currentTime + 0.05);
    source.start(start);
    this.sources.push(source);
    this.scheduled.push({ start, offset: this.samples / this.sampleRate, duration: count / this.sampleRate });
    this.nextStart = start + count / this.sampleRate;
    if (this.firstStart === null) this.firstStart = start;
    this.samples += count;
    return count;
  }

  /** Seconds of audio received so far. */
  get seconds() {
    return this.samples / this.sampleRate;
  }

  /** Where playback is in the take, in seconds of audio: unlike the clock since the first piece,
   * it does not run on through a gap left when a piece came late. */
  get positionSeconds() {
    const now = this.context.currentTime;
    let position = 0;
    for (const piece of this.scheduled) {
      if (now < piece.start) break;
      position = piece.offset + Math.min(now - piece.start, piece.duration);
    }
    return position;
  }

  /** Seconds the first piece has been playing (0 before it starts). */
  get playedSeconds() {
    return this.firstStart === null ? 0 : Math.max(0, this.context.currentTime - this.firstStart);
  }

  stop() {
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        // already stopped
      }
    }
    this.sources = [];
  }

  toWav() {
    return wavBlob(this.chunks, this.sampleRate);
  }
}
