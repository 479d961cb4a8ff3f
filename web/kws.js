// The keyword spotter in the browser: the run's streaming TFLite model in LiteRT.js (WASM), driven hop by
// hop exactly like the Python reference (pipeline/edge/runtime.py: Stream; pipeline/edge/detection.py:
// ContinuousScorer or WindowScorer, Smoother, Picker).
import { loadAndCompile, loadLiteRt, Tensor } from '@litertjs/core';

const SILENCE = '_silence_';
const UNKNOWN = '_unknown_';

let runtime = null;
export function loadRuntime(wasmDir) { // once per page
  runtime ??= loadLiteRt(wasmDir);
  return runtime;
}

async function compile(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  try {
    return await loadAndCompile(bytes, { accelerator: 'wasm' });
  } catch (e) {
    throw new Error(`${url}: not a model LiteRT.js can run (${e.message ?? e})`);
  }
}

// One call of a model: named Float32Array inputs -> named Float32Array outputs. Every tensor made here
// is deleted here (LiteRT.js tensors live in WASM memory, outside the garbage collector).
async function runNamed(model, inputs, shapes) {
  const tensors = {};
  try {
    for (const [name, data] of Object.entries(inputs)) tensors[name] = new Tensor(data, shapes[name]);
    const outputs = await model.run(tensors);
    const result = {};
    for (const [name, tensor] of Object.entries(outputs)) {
      result[name] = new Float32Array(await tensor.data()); // copy out of WASM memory
      tensor.delete();
    }
    return result;
  } finally {
    for (const tensor of Object.values(tensors)) tensor.delete();
  }
}

function checkInputs(model, io, url) { // the model's signature must be the one the manifest describes
  const names = model.getInputDetails().map((d) => d.name).sort();
  const want = Object.keys(io.inputs).sort();
  if (names.join() !== want.join()) throw new Error(`${url}: inputs ${names} but the manifest says ${want}`);
}

const zeros = (shape) => new Float32Array(shape.reduce((a, b) => a * b, 1));

// A streaming step: (state, hop) -> {scores, state, logmel?}. State is a plain object of Float32Arrays,
// never mutated, so a stream's state can be kept while flushing a copy of it (like the Python dicts).
class FloatStep { // model_streaming.tflite: hop + state -> scores + new state
  constructor(model, io) {
    this.model = model;
    this.shapes = io.inputs;
    this.stateNames = Object.keys(io.inputs).filter((n) => n !== 'audio_hop');
    this.calls = 0;
  }
  zeroState() { return Object.fromEntries(this.stateNames.map((n) => [n, zeros(this.shapes[n])])); }
  async step(state, hop) {
    this.calls++;
    const out = await runNamed(this.model, { ...state, audio_hop: hop }, this.shapes);
    return { scores: out.scores, state: Object.fromEntries(this.stateNames.map((n) => [n, out[`new_${n}`]])) };
  }
}

class SplitStep { // float frontend (hop -> log-mel frame) + full-int8 network (frame + GRU states -> scores)
  constructor(frontend, frontendIo, network, networkIo) {
    this.frontend = frontend;
    this.network = network;
    this.frontShapes = frontendIo.inputs;
    this.netShapes = networkIo.inputs;
    this.gruNames = Object.keys(networkIo.inputs).filter((n) => n !== 'logmel');
    this.classes = networkIo.outputs.scores[1];
    this.calls = 0;
  }
  zeroState() {
    const state = { buffer: zeros(this.frontShapes.buffer), warmup: zeros(this.frontShapes.warmup) };
    for (const n of this.gruNames) state[n] = zeros(this.netShapes[n]);
    state.scores = new Float32Array(this.classes); // not a model input: the scores of the last network call
    return state;
  }
  async step(state, hop) {
    this.calls++;
    const front = await runNamed(this.frontend, { audio_hop: hop, buffer: state.buffer, warmup: state.warmup },
      this.frontShapes);
    const next = { ...state, buffer: front.new_buffer, warmup: front.new_warmup };
    if (front.ready[0] < 1) return { scores: state.scores, state: next }; // no frame completed: GRU states stay
    this.calls++;
    const net = await runNamed(this.network,
      { logmel: front.logmel, ...Object.fromEntries(this.gruNames.map((n) => [n, state[n]])) }, this.netShapes);
    for (const n of this.gruNames) next[n] = net[`new_${n}`];
    next.scores = net.scores;
    return { scores: net.scores, state: next, logmel: front.logmel };
  }
}

// The display-only log-mel: the split frontend run on one never-reset state (exactly the frames the model sees).
export class LogmelView {
  constructor(frontend, io) { this.frontend = frontend; this.shapes = io.inputs; this.reset(); }
  reset() { this.state = { buffer: zeros(this.shapes.buffer), warmup: zeros(this.shapes.warmup) }; }
  async push(hop) { // -> Float32Array(n_mels) or null while warming up
    const out = await runNamed(this.frontend, { audio_hop: hop, ...this.state }, this.shapes);
    this.state = { buffer: out.new_buffer, warmup: out.new_warmup };
    return out.ready[0] >= 1 ? out.logmel : null;
  }
}

const artifactOf = (manifest, variant) => manifest.artifacts.find((a) => a.kind === 'tflite' && a.variant === variant);

// The int8 variants are split pairs: a float frontend (the manifest's `frontend`) and an int8 network.
const isSplit = (variant) => variant.endsWith('_int8');

// Which streaming variants the manifest lists: 'continuous' and 'continuous_int8' (the continuous design's
// float model and its int8 split pair), 'streaming' (the 1-s weights, float) and/or 'streaming_int8' (split
// pair), the run's detector first.
export function streamingVariants(manifest) {
  return ['continuous', 'continuous_int8', 'streaming', 'streaming_int8'].filter((v) => {
    const a = artifactOf(manifest, v);
    return a && (!isSplit(v) || (a.frontend && manifest.artifacts.some((b) => b.path === a.frontend)));
  });
}

// The detection design a variant runs: the continuous models never reset their one state; the 1-s models
// run the staggered states (pipeline/edge/detection.py).
export const designOf = (variant) => (variant.startsWith('continuous') ? 'continuous' : 'staggered');

export async function loadStep(runUrl, manifest, variant) {
  const art = artifactOf(manifest, variant);
  if (!art) throw new Error(`the run has no ${variant} model`);
  if (variant === 'streaming' || variant === 'continuous') {
    const model = await compile(runUrl + art.path);
    checkInputs(model, art.io, art.path);
    return new FloatStep(model, art.io);
  }
  const frontArt = manifest.artifacts.find((a) => a.path === art.frontend);
  const [frontend, network] = await Promise.all([compile(runUrl + frontArt.path), compile(runUrl + art.path)]);
  checkInputs(frontend, frontArt.io, frontArt.path);
  checkInputs(network, art.io, art.path);
  return new SplitStep(frontend, frontArt.io, network, art.io);
}

export async function loadLogmelView(runUrl, manifest) {
  const art = artifactOf(manifest, 'streaming_frontend');
  if (!art) return null;
  const model = await compile(runUrl + art.path);
  checkInputs(model, art.io, art.path);
  return new LogmelView(model, art.io);
}

// Detection parameters: manifest.detection when the run has it, else the Python defaults (pipeline/edge/detection.py: DetectionParams).
export function detectionParams(manifest, variant, thresholdOverride) {
  const spec = manifest.feature_spec;
  const d = manifest.detection ?? {};
  const art = artifactOf(manifest, isSplit(variant) ? 'streaming_frontend' : 'streaming') ?? {};
  const hop = art.io?.hop_samples ?? spec.hop_length;
  const windowSamples = d.window_samples ?? spec.clip_samples;
  const streams = d.streams ?? 5;
  const hopsPerWindow = Math.round(windowSamples / hop);
  return {
    design: designOf(variant),
    sampleRate: spec.sample_rate,
    hop,
    windowSamples,
    hopsPerWindow,
    streams,
    strideHops: d.stride_samples != null ? Math.round(d.stride_samples / hop) : Math.floor(hopsPerWindow / streams),
    flushHops: d.flush_hops ?? art.io?.flush_hops ?? 2,
    smoothWindows: d.smooth_windows ?? 3,
    refractoryS: d.refractory_s ?? 1.0,
    threshold: thresholdOverride ?? d.threshold ?? manifest.long_audio?.threshold ?? 0.8,
  };
}

// One 1-s clip, hop by hop from the zero state, then flush_hops zero hops -> the scores of the last step
// (what the 1-s model gives for the clip). Used by window.kwsScoreClip.
export async function scoreClip(step, params, clip) {
  let state = step.zeroState();
  let out = null;
  const hops = Math.floor(clip.length / params.hop);
  for (let k = 0; k < hops; k++) {
    out = await step.step(state, clip.slice(k * params.hop, (k + 1) * params.hop));
    state = out.state;
  }
  const tail = new Float32Array(params.hop);
  for (let i = 0; i < params.flushHops; i++) {
    out = await step.step(state, tail);
    state = out.state;
  }
  return out.scores;
}

// Continuous detection, one 16-kHz hop at a time; the same steps, in the same order, as pipeline/edge/detection.py.
// params.design 'continuous': one state, never reset, read at every stride-th log-mel frame;
// 'staggered': `streams` states, each reset after its window.
export class Detector {
  constructor(step, params, labels) {
    this.step = step;
    this.p = params;
    this.labels = labels;
    // picking looks at keyword classes only
    this.keywordIds = labels.map((l, i) => i).filter((i) => labels[i] !== SILENCE && labels[i] !== UNKNOWN);
    this.tail = new Float32Array(params.hop); // the 1-s model sees zeros after its clip
    // `streams` copies of the streaming state (one for the continuous design), all starting at zero
    this.states = Array.from({ length: params.design === 'continuous' ? 1 : params.streams }, () => step.zeroState());
    this.k = 0; // index of the next input hop
    this.recent = []; // the last smooth_windows windows' score vectors
    this.mutedUntil = -Infinity;
    this.armed = labels.map(() => true); // a keyword that fired waits for its score to fall below the threshold
  }

  // Feed hop k (Float32Array of `hop` samples). Returns {windows: [{time_s, scores, smoothed}], detections}.
  async pushHop(hop) {
    const windows = this.p.design === 'continuous' ? await this.continuousScores(hop) : await this.staggeredScores(hop);
    const detections = [];
    for (const w of windows) {
      w.smoothed = this.smooth(w.scores);
      const det = this.pick(w.time_s, w.smoothed);
      if (det) detections.push(det);
    }
    return { windows, detections };
  }

  // continuous design: hop k completes log-mel frame k - flush_hops + 1; every stride-th frame is read,
  // at the time of its centre
  async continuousScores(hop) {
    const k = this.k++;
    const out = await this.step.step(this.states[0], hop);
    this.states[0] = out.state;
    const frame = k - this.p.flushHops + 1;
    if (frame < 0 || (frame + 1) % this.p.strideHops !== 0) return [];
    return [{ frame, time_s: (frame * this.p.hop) / this.p.sampleRate, scores: out.scores }];
  }

  // staggered design: stream s starts at hop s*stride and restarts from zero after each window
  async staggeredScores(hop) {
    const { hopsPerWindow, strideHops, streams, flushHops } = this.p;
    const k = this.k++;
    const windows = [];
    for (let s = 0; s < streams; s++) {
      // stream s starts at hop s*stride
      const startHop = s * strideHops;
      if (k < startHop) continue;
      // hop index inside this stream's current window
      const position = (k - startHop) % hopsPerWindow;
      let out = await this.step.step(this.states[s], hop);
      this.states[s] = out.state;
      if (position === hopsPerWindow - 1) {
        // window complete: flush_hops zero hops from this stream's state give the window's scores ...
        let flushed = out.state;
        for (let i = 0; i < flushHops; i++) {
          out = await this.step.step(flushed, this.tail);
          flushed = out.state;
        }
        windows.push({ endSample: (k + 1) * this.p.hop, scores: out.scores });
        // ... and the stream restarts from the zero state
        this.states[s] = this.step.zeroState();
      }
    }
    // windows in order of their end sample (at most one stream completes per hop, so already in order)
    windows.sort((a, b) => a.endSample - b.endSample);
    // time of a window: its centre, in seconds of audio since the start
    for (const w of windows) w.time_s = (w.endSample - this.p.windowSamples / 2) / this.p.sampleRate;
    return windows;
  }

  // smoothing: causal moving average over the last smooth_windows windows (fewer at the start)
  smooth(scores) {
    this.recent.push(scores);
    if (this.recent.length > this.p.smoothWindows) this.recent.shift();
    const mean = new Float64Array(scores.length);
    for (const row of this.recent) for (let i = 0; i < row.length; i++) mean[i] += row[i];
    for (let i = 0; i < mean.length; i++) mean[i] /= this.recent.length;
    return mean;
  }

  // picking: best keyword class; fires at >= threshold if armed and not muted; then muted for refractory_s
  // and that keyword disarmed until its score falls below the threshold (one detection per rise)
  pick(time_s, row) {
    for (const i of this.keywordIds) if (row[i] < this.p.threshold) this.armed[i] = true;
    let best = this.keywordIds[0];
    for (const i of this.keywordIds) if (row[i] > row[best]) best = i; // first of equals, like Python's max
    if (row[best] >= this.p.threshold && time_s >= this.mutedUntil && this.armed[best]) {
      this.mutedUntil = time_s + this.p.refractoryS;
      this.armed[best] = false;
      return { label: this.labels[best], time_s: Math.round(time_s * 1000) / 1000, score: row[best] };
    }
    return null;
  }
}
