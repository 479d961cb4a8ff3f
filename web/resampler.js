// Streaming sample-rate converter: exact rational polyphase, Kaiser-windowed sinc low-pass.
//
// Filter (to 16 kHz): cutoff (-6 dB) at the lower rate's Nyquist (8 kHz), transition band 5% of the lower
// rate each side (7.6..8.4 kHz), Kaiser beta 7.86 (~80 dB stopband). The passband ends at 7.6 kHz, the top
// edge of the model's mel filters (fmax 7600 Hz), and what aliases from 8..8.4 kHz lands above 7.6 kHz,
// where the log-mel does not look. 48 kHz -> 16 kHz: 302 taps (L=1, M=3); 44.1 kHz: 278 taps, 160 phases.
// Output sample n sits at input time n*M/L, so the converter adds no time offset (only H samples of latency).

const ATTENUATION_DB = 80;
const TRANSITION = 0.05; // full transition band (centred on the cutoff), as a fraction of the lower rate

function gcd(a, b) { return b ? gcd(b, a % b) : a; }

function besselI0(x) { // modified Bessel function of order 0 (series), for the Kaiser window
  let sum = 1, term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

export class Resampler {
  constructor(inRate, outRate) {
    if (!(inRate > 0 && outRate > 0) || inRate % 1 || outRate % 1) throw new Error(`bad sample rates ${inRate} -> ${outRate}`);
    const g = gcd(inRate, outRate);
    this.L = outRate / g; // output samples per M input samples
    this.M = inRate / g;
    this.inRate = inRate;
    this.outRate = outRate;
    this.identity = this.L === 1 && this.M === 1;
    if (this.identity) return;
    if (this.L > 4096) throw new Error(`sample rate ${inRate} Hz is not a simple ratio of ${outRate} Hz`);
    const low = Math.min(inRate, outRate);
    const cutoff = low / 2; // Hz, -6 dB point
    const beta = 0.1102 * (ATTENUATION_DB - 8.7);
    const width = (2 * Math.PI * TRANSITION * low) / inRate; // transition band, rad/input sample
    const H = Math.ceil((ATTENUATION_DB - 8) / (2.285 * width) / 2); // half length, input samples
    this.H = H;
    this.taps = 2 * H;
    // phase p (0..L-1) -> taps for inputs i0-H+1 .. i0+H, where the output sits at i0 + p/L
    this.table = new Float32Array(this.L * this.taps);
    const fc = cutoff / inRate; // cycles per input sample
    const i0beta = besselI0(beta);
    for (let p = 0; p < this.L; p++) {
      let sum = 0;
      for (let j = 0; j < this.taps; j++) {
        const d = p / this.L + H - 1 - j; // distance from the output time to input j, in input samples
        const x = 2 * fc * d;
        const sinc = d === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const r = d / H;
        const window = Math.abs(r) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / i0beta;
        const h = 2 * fc * sinc * window;
        this.table[p * this.taps + j] = h;
        sum += h;
      }
      for (let j = 0; j < this.taps; j++) this.table[p * this.taps + j] /= sum; // exact unit gain at DC
    }
    // input history: buf[0] is input sample number bufStart (negative numbers are the zeros before the start)
    this.bufStart = -H;
    this.received = 0; // input samples pushed so far
    this.i0 = 0; // the next output's integer input position ...
    this.phase = 0; // ... and fraction phase/L
    this.buf = new Float32Array(H); // the zeros before the first sample
  }

  // Feed input samples, get every output sample that is complete.
  push(input) {
    if (this.identity) return Float32Array.from(input);
    const joined = new Float32Array(this.buf.length + input.length);
    joined.set(this.buf);
    joined.set(input, this.buf.length);
    this.buf = joined;
    this.received += input.length;
    const out = [];
    const { taps, table, H, L, M } = this;
    while (this.i0 + H < this.received) { // the last tap (input i0+H) has arrived
      const first = this.i0 - H + 1 - this.bufStart;
      const row = this.phase * taps;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += table[row + j] * joined[first + j];
      out.push(acc);
      this.phase += M; // next output: M/L input samples further
      while (this.phase >= L) { this.phase -= L; this.i0 += 1; }
    }
    const keep = this.i0 - H + 1 - this.bufStart; // drop history no future output needs
    if (keep > 0) {
      this.buf = this.buf.slice(keep);
      this.bufStart += keep;
    }
    return Float32Array.from(out);
  }

  // Resample a whole signal: round(length * outRate / inRate) samples, zeros assumed after the end.
  static whole(signal, inRate, outRate) {
    const r = new Resampler(inRate, outRate);
    const count = Math.round((signal.length * outRate) / inRate);
    if (r.identity) return Float32Array.from(signal);
    const out = new Float32Array(count);
    const head = r.push(signal);
    out.set(head.subarray(0, count));
    if (head.length < count) out.set(r.push(new Float32Array(r.H + r.M)).subarray(0, count - head.length), head.length);
    return out;
  }
}
