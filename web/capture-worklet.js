// AudioWorklet: hands the microphone's samples (mono, at the context's native rate) to the page in ~20-ms
// chunks; all the work (resampling, model) happens on the page, not on the audio thread.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate / 50);
    this.chunk = new Float32Array(this.size);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const frames = channels[0].length;
      for (let i = 0; i < frames; i++) {
        let sum = 0; // mix down to mono
        for (const channel of channels) sum += channel[i];
        this.chunk[this.filled++] = sum / channels.length;
        if (this.filled === this.size) {
          this.port.postMessage(this.chunk, [this.chunk.buffer]); // transferred: this.chunk is now detached
          this.chunk = new Float32Array(this.size);
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the page listens
  }
}

registerProcessor('kws-capture', Capture);
