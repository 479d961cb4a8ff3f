// The page: loads the run's manifest and streaming model, listens to the microphone (or reads a dropped file),
// and shows scores, the log-mel, detections and compute time. The window.kws* names are the contract
// outside checks use (docs/live.md).
import { Resampler } from './resampler.js';
import { Detector, detectionParams, loadLogmelView, loadRuntime, loadStep, scoreClip, streamingVariants } from './kws.js';

const RUN = '/run/';
const WASM_DIR = '/node_modules/@litertjs/core/wasm/';
const SAMPLE_RATE = 16000; // the model's rate; checked against manifest.feature_spec below
const NO_AUDIO_TIMEOUT_MS = 4000; // listening but no samples arriving by then is an error, not a silent hang

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

window.kwsStatus = 'loading';
window.kwsDetections = [];
window.kwsTiming = null;
window.kwsAudioSeconds = 0;
window.kwsWindows = [];

const page = { manifest: null, labels: [], variant: null, step: null, logmel: null, params: null, session: null, mic: null, lastSession: null };

function setStatus(text) {
  window.kwsStatus = text;
  $('status').textContent = text;
  $('status').classList.toggle('error', text.startsWith('error'));
}

function fail(text) {
  setStatus(text.startsWith('error') ? text : `error: ${text}`);
}

function controls({ running }) {
  const ready = page.step !== null;
  $('start').disabled = !ready || running;
  $('stop').disabled = !running;
  $('variant').disabled = !ready || running;
  $('file').disabled = !ready || running;
}

function thresholdFromQuery() {
  if (!query.has('threshold')) return undefined;
  const t = Number(query.get('threshold'));
  if (!Number.isFinite(t)) throw new Error(`?threshold=${query.get('threshold')} is not a number`);
  return t;
}

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`${url}: ${e.message}`);
  }
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

// ---- one listening (or file) session: 16-kHz samples in, hops through the detector ----

class Session {
  constructor() {
    this.detector = new Detector(page.step, page.params, page.labels);
    this.pending = new Float32Array(0); // 16-kHz samples not yet a whole hop
    this.samples = 0; // samples processed: the audio clock
    this.hopMs = []; // compute time per hop (all streams), last 500 hops
    this.calls0 = page.step.calls;
    this.chain = Promise.resolve(); // chunks are processed strictly in order
    this.recorded = query.has('record') ? [] : null; // ?record=1: keep every hop, for window.kwsRecording()
    page.lastSession = this;
    window.kwsDetections = [];
    window.kwsWindows = [];
    window.kwsAudioSeconds = 0;
    $('detections').replaceChildren();
    page.logmel?.reset();
  }

  enqueue(samples) { // from the microphone: queue behind the chunks still being processed
    this.chain = this.chain.then(() => this.feed(samples)).catch((e) => {
      stopListening(`error: while running the model: ${e.message ?? e}`); // not returned: stopListening awaits this chain
    });
  }

  async feed(samples) {
    const joined = new Float32Array(this.pending.length + samples.length);
    joined.set(this.pending);
    joined.set(samples, this.pending.length);
    const { hop } = page.params;
    let offset = 0;
    for (; offset + hop <= joined.length; offset += hop) await this.processHop(joined.slice(offset, offset + hop));
    this.pending = joined.slice(offset);
  }

  async processHop(hop) {
    const t0 = performance.now();
    const { windows, detections } = await this.detector.pushHop(hop);
    this.hopMs.push(performance.now() - t0);
    if (this.hopMs.length > 500) this.hopMs.shift();
    this.samples += hop.length;
    this.recorded?.push(hop);
    window.kwsAudioSeconds = this.samples / SAMPLE_RATE; // the audio clock detections are timed on
    if (page.logmel) drawLogmelColumn(await page.logmel.push(hop));
    for (const w of windows) { // kept for tools and tests: the last 3000 windows (10 min)
      window.kwsWindows.push({ time_s: w.time_s, smoothed: Array.from(w.smoothed) });
      if (window.kwsWindows.length > 3000) window.kwsWindows.shift();
    }
    for (const det of detections) {
      window.kwsDetections.push(det);
      addDetectionRow(det);
      this.lastHit = { label: det.label, until: this.samples / SAMPLE_RATE + 1 }; // highlighted for 1 s of audio
    }
    const hit = this.lastHit && this.samples / SAMPLE_RATE < this.lastHit.until ? this.lastHit.label : null;
    if (windows.length) drawBars(windows[windows.length - 1].smoothed, hit);
    if (this.samples % (SAMPLE_RATE / 5) === 0) showTiming(this);
  }
}

// ---- microphone ----

async function startListening() {
  if (page.session) return;
  controls({ running: true });
  try {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error('no microphone API in this browser (it needs http://127.0.0.1 or https)');
    if (typeof AudioWorkletNode === 'undefined') throw new Error('this browser has no AudioWorklet');
    setStatus('waiting for the microphone (allow it in the browser prompt)');
    let stream;
    try {
      // raw signal: the model was trained on unprocessed audio
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      if (e.name === 'NotAllowedError' || e.name === 'SecurityError') throw new Error('microphone permission denied');
      if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') throw new Error('no microphone found');
      if (e.name === 'NotReadableError') throw new Error('the microphone is in use or unreadable');
      throw new Error(`microphone: ${e.name}: ${e.message}`);
    }
    const mic = { stream, context: null, lastAudio: 0, watchdog: null };
    page.mic = mic;
    const track = stream.getAudioTracks()[0];
    const rate = track.getSettings().sampleRate;
    // the device's native rate, so the browser does not resample before we do
    try {
      mic.context = new AudioContext(rate ? { sampleRate: rate } : {});
    } catch {
      mic.context = new AudioContext();
    }
    await mic.context.audioWorklet.addModule('/capture-worklet.js');
    const source = mic.context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(mic.context, 'kws-capture');
    source.connect(node);
    node.connect(mic.context.destination); // pulled by the graph; the worklet writes silence
    const resampler = new Resampler(mic.context.sampleRate, SAMPLE_RATE);
    page.session = new Session();
    node.port.onmessage = (e) => {
      mic.lastAudio = performance.now();
      page.session?.enqueue(resampler.push(e.data));
    };
    track.onended = () => stopListening('error: the microphone was disconnected');
    await mic.context.resume();
    mic.started = performance.now();
    mic.watchdog = setInterval(() => {
      if (!mic.lastAudio && performance.now() - mic.started > NO_AUDIO_TIMEOUT_MS) {
        stopListening(`error: no audio from the microphone (audio context ${mic.context.state})`);
      }
    }, 500);
    mic.rateNote = `${mic.context.sampleRate} Hz -> ${SAMPLE_RATE} Hz`;
    setStatus('listening');
  } catch (e) {
    stopListening(`error: ${e.message ?? e}`);
  }
}

async function stopListening(finalStatus = 'stopped') {
  const mic = page.mic;
  page.mic = null;
  if (mic) {
    clearInterval(mic.watchdog);
    mic.stream.getTracks().forEach((t) => t.stop());
    await mic.context?.close().catch(() => {});
  }
  const session = page.session;
  page.session = null;
  if (session) {
    await session.chain; // let the queued hops finish: their detections count
    showTiming(session);
  }
  setStatus(finalStatus);
  controls({ running: false });
}

// ---- a dropped / chosen file: same resampler, same hop loop, as fast as it goes ----

function wavSampleRate(bytes) { // decode a 16-kHz WAV at 16 kHz instead of resampling it twice
  const v = new DataView(bytes);
  const tag = (o) => String.fromCharCode(v.getUint8(o), v.getUint8(o + 1), v.getUint8(o + 2), v.getUint8(o + 3));
  if (bytes.byteLength < 28 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE' || tag(12) !== 'fmt ') return null;
  return v.getUint32(24, true);
}

async function runFile(file) {
  if (page.session || !page.step) return;
  controls({ running: true });
  try {
    setStatus(`reading ${file.name}`);
    const bytes = await file.arrayBuffer();
    const rate = wavSampleRate(bytes) ?? 48000;
    let buffer;
    try {
      buffer = await new OfflineAudioContext(1, 1, rate >= 3000 && rate <= 384000 ? rate : 48000).decodeAudioData(bytes);
    } catch {
      throw new Error(`${file.name} is not an audio file this browser can decode`);
    }
    const mono = new Float32Array(buffer.length);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const data = buffer.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
    }
    const audio = Resampler.whole(mono, buffer.sampleRate, SAMPLE_RATE);
    const session = new Session();
    page.session = session;
    setStatus(`processing ${file.name}`);
    const chunk = SAMPLE_RATE / 2;
    for (let i = 0; i < audio.length; i += chunk) {
      if (page.session !== session) return; // stopped
      await session.feed(audio.subarray(i, i + chunk));
      await new Promise((r) => setTimeout(r, 0)); // let the page repaint
    }
    page.session = null;
    showTiming(session);
    setStatus(`done: ${window.kwsDetections.length} detections in ${(audio.length / SAMPLE_RATE).toFixed(2)} s of ${file.name}`);
  } catch (e) {
    page.session = null;
    fail(e.message ?? String(e));
  }
  controls({ running: false });
}

// ---- drawing ----

function buildBars() {
  const rows = page.labels.map((label) => {
    const row = document.createElement('div');
    row.className = 'bar-row' + (label.startsWith('_') ? ' other' : '');
    row.innerHTML = '<span class="label"></span><div class="track"><div class="fill"></div><div class="mark"></div></div><span class="value">0.00</span>';
    row.querySelector('.label').textContent = label;
    return row;
  });
  $('bars').replaceChildren(...rows);
  placeThresholdMarks();
}

function placeThresholdMarks() {
  for (const mark of document.querySelectorAll('.bar-row .mark')) mark.style.left = `${100 * page.params.threshold}%`;
}

function drawBars(scores, hitLabel) {
  const rows = $('bars').children;
  for (let i = 0; i < rows.length; i++) {
    rows[i].querySelector('.fill').style.width = `${(100 * scores[i]).toFixed(1)}%`;
    rows[i].querySelector('.value').textContent = scores[i].toFixed(2);
    rows[i].classList.toggle('hit', page.labels[i] === hitLabel);
  }
}

function addDetectionRow(det) {
  const tr = document.createElement('tr');
  for (const text of [det.time_s.toFixed(2), det.label, det.score.toFixed(3)]) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.appendChild(td);
  }
  $('detections').prepend(tr);
}

const COLORS = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]]; // magma
function color(x) {
  const t = Math.min(1, Math.max(0, x)) * (COLORS.length - 1);
  const i = Math.min(COLORS.length - 2, Math.floor(t));
  const f = t - i;
  return COLORS[i].map((c, k) => Math.round(c + f * (COLORS[i + 1][k] - c)));
}

let logmelTop = -20; // dB at the top of the colour scale: follows the loudest frame, decays slowly
function drawLogmelColumn(frame) {
  if (!frame) return;
  const canvas = $('logmel');
  const g = canvas.getContext('2d');
  const { width, height } = canvas;
  g.drawImage(canvas, -1, 0); // scroll one frame (10 ms) to the left
  logmelTop = Math.max(Math.max(...frame), logmelTop - 0.02);
  const column = g.createImageData(1, height);
  for (let y = 0; y < height; y++) {
    const band = Math.floor(((height - 1 - y) * frame.length) / height); // low frequencies at the bottom
    const [r, gr, b] = color((frame[band] - (logmelTop - 80)) / 80); // an 80-dB range
    column.data.set([r, gr, b, 255], 4 * y);
  }
  g.putImageData(column, width - 1, 0);
}

function showTiming(session) {
  const sorted = [...session.hopMs].sort((a, b) => a - b);
  if (!sorted.length) return;
  const p50 = sorted[Math.floor(sorted.length / 2)];
  const p90 = sorted[Math.floor(sorted.length * 0.9)];
  const calls = page.step.calls - session.calls0;
  const hops = session.samples / page.params.hop;
  const perCall = (session.hopMs.reduce((a, b) => a + b, 0) / session.hopMs.length) / (calls / hops);
  window.kwsTiming = { hop_ms_p50: p50, hop_ms_p90: p90, calls_per_hop: calls / hops, call_ms_mean: perCall, hops };
  $('timing').textContent = `per ${1000 * page.params.hop / SAMPLE_RATE}-ms hop (${page.params.streams} streams): p50 ${p50.toFixed(2)} ms, p90 ${p90.toFixed(2)} ms` +
    ` | ${(calls / hops).toFixed(2)} model calls per hop, ${perCall.toFixed(3)} ms each` +
    (page.mic?.rateNote ? ` | ${page.mic.rateNote}` : '');
  $('audio-clock').textContent = `(${(session.samples / SAMPLE_RATE).toFixed(1)} s of audio)`;
}

// ---- loading ----

async function loadVariant(variant) {
  controls({ running: true });
  page.step = null;
  setStatus(`loading ${variant} model`);
  try {
    page.step = await loadStep(RUN, page.manifest, variant);
    page.variant = variant;
    page.params = detectionParams(page.manifest, variant, thresholdFromQuery());
    $('threshold').value = page.params.threshold;
    buildBars();
    setStatus('ready');
  } catch (e) {
    fail(`could not load the model: ${e.message ?? e}`);
  }
  controls({ running: false });
}

async function init() {
  try {
    page.manifest = await (await fetchOk(RUN + 'manifest.json')).json();
    page.labels = (await (await fetchOk(RUN + 'labels.txt')).text()).split(/\s+/).filter(Boolean);
    if (page.manifest.feature_spec?.sample_rate !== SAMPLE_RATE) throw new Error(`the run's sample rate is not ${SAMPLE_RATE} Hz`);
    $('run-name').textContent = `run "${page.manifest.run}"`;
    const variants = streamingVariants(page.manifest);
    if (!variants.length) throw new Error('the run has no streaming model (model_streaming.tflite)');
    const wanted = query.get('model');
    if (wanted && !variants.includes(wanted)) throw new Error(`?model=${wanted}: the run has ${variants.join(', ')}`);
    const names = { continuous: 'float32, one continuous state (model_continuous)',
      continuous_int8: 'int8, one continuous state (frontend + model_continuous_int8)',
      streaming: 'float32, 5 staggered states (model_streaming)',
      streaming_int8: 'int8, 5 staggered states (frontend + model_streaming_int8)' };
    $('variant').replaceChildren(...variants.map((v) => new Option(names[v], v)));
    $('variant').value = wanted ?? variants[0];
    await loadRuntime(WASM_DIR);
  } catch (e) {
    fail(`could not load the model: ${e.message ?? e}`);
    return;
  }
  try {
    page.logmel = await loadLogmelView(RUN, page.manifest);
  } catch {
    page.logmel = null;
  }
  if (!page.logmel) $('logmel-note').textContent = '(no model_streaming_frontend.tflite in this run: no picture)';
  await loadVariant($('variant').value);
}

// ---- wiring ----

$('start').addEventListener('click', startListening);
$('stop').addEventListener('click', () => stopListening());
$('variant').addEventListener('change', (e) => loadVariant(e.target.value));
$('threshold').addEventListener('change', (e) => {
  const t = Number(e.target.value);
  if (page.params && Number.isFinite(t)) {
    page.params.threshold = t; // the Detector holds the same params object
    placeThresholdMarks();
  }
});
$('file').addEventListener('change', (e) => e.target.files[0] && runFile(e.target.files[0]));
const drop = document.body;
drop.addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('dragover'); });
drop.addEventListener('dragleave', () => $('drop').classList.remove('dragover'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  $('drop').classList.remove('dragover');
  const file = e.dataTransfer.files[0];
  if (file) runFile(file);
});

// For tests and tools: the scores of one 16-kHz clip (Float32Array or array), hop by hop from the zero
// state then flush_hops zero hops, with the selected model. Resolves to an array of class scores.
window.kwsScoreClip = async (samples) => {
  if (!page.step) throw new Error(window.kwsStatus);
  return Array.from(await scoreClip(page.step, page.params, Float32Array.from(samples)));
};

// With ?record=1: the 16-kHz audio the last session fed the detector (after the resampler), so a test can
// run the Python reference on exactly what the page heard. Float32Array.
window.kwsRecording = () => {
  const hops = page.lastSession?.recorded ?? [];
  const out = new Float32Array(hops.length * (page.params?.hop ?? 0));
  hops.forEach((hop, i) => out.set(hop, i * hop.length));
  return out;
};

init();
