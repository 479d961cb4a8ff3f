"""The always-on design comparison: one continuous GRU state against the five staggered, reset states.

Today's detector (pipeline/edge/detection.py) runs five streaming states side by side, each reset every
second, because the model was trained on 1-s clips that start from silence. The other design keeps
one GRU state forever and reads the scores at every hop. It costs a fifth of the compute per hop, but
the model must then learn on longer windows where the answer is due, and must not drift over hours.

This script builds that second design from a finished run and measures both on the run's own always-on
benchmark (the verify stage's two cached recordings: the validation one picks the threshold, the test
one gives the figures):

1. Training sequences (``--seconds``, 2.5 s): a prepared training row (keyword, unknown word, word
   fragment, running-speech window or silence) placed so the word ends at a random point, with running
   speech of the training speakers around it (``--context`` of them, 0-0.6 s gap each side: said alone
   to said in a phrase), and background noise at 5-30 dB SNR. Frame targets: the keyword from its end to
   ``--label-s`` after it, nothing (weight 0) while it is being said, ``_unknown_`` (``_silence_`` for
   silence rows) everywhere else.
2. The model: the run's architecture with every GRU returning sequences and the dense head applied per
   frame, started from the run's 1-s weights, trained ``--epochs`` on the sequences.
3. Scoring: the whole recording through one state (never reset), in chunks; a decision every 200 ms
   (the staggered design's stride), then the same smoothing, picking and event matching as verify.

Usage (from the repo root; the run's config, with the same --set as the run):
    .venv/bin/python scripts/continuous_state.py --run exports/demo --out /tmp/continuous [--set key=value ...]
Writes DIR/continuous.keras and DIR/continuous.json, and prints both designs' figures on the same threshold grid.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import AudioError, load_audio  # noqa: E402
from pipeline.augment import active_power, noise_segment  # noqa: E402
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, load_config  # noqa: E402
from pipeline.dataset import SPEECH_DIR, load_clip, noise_audio, read_rows, training_speech  # noqa: E402
from pipeline.edge.detection import NON_KEYWORDS  # noqa: E402
from pipeline.feature_spec import FeatureSpec, logmel  # noqa: E402
from pipeline.long_audio import word_span  # noqa: E402

GAP_S = (0.0, 0.6)  # clear time between the word and the speech around it
SNR_DB = (5.0, 30.0)
NOISE_PROBABILITY = 0.8


# ---- training sequences (worker processes) ------------------------------------------------------
_JOB: dict = {}


def _init(job: dict) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    _JOB.update(job)


def _speech_piece(rng: np.random.Generator, length: int, sr: int) -> np.ndarray:
    files = _JOB["speech_files"]
    audio = load_audio(files[int(rng.integers(len(files)))], sample_rate=sr)
    if len(audio) <= length:
        return np.pad(audio, (0, length - len(audio)))
    start = int(rng.integers(len(audio) - length))
    return audio[start:start + length]


def make_sequence(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(features [T, M] float16, frame targets [T] int, frame weights [T] float) of one sequence."""
    job = _JOB
    spec: FeatureSpec = job["spec"]
    sr, length = spec.sample_rate, job["samples"]
    rng = np.random.default_rng([job["seed"], index])
    row = job["rows"][int(rng.integers(len(job["rows"])))]
    labels = job["labels"]
    try:
        clip = load_clip(row, spec)
    except AudioError:
        return None
    frames = 1 + length // spec.hop_length
    targets = np.full(frames, labels.index(UNKNOWN_LABEL), np.int32)
    weights = np.ones(frames, np.float32)
    canvas = np.zeros(length, np.float32)
    if row["label"] == SILENCE_LABEL:
        targets[:] = labels.index(SILENCE_LABEL)
    elif SPEECH_DIR in row["path"]:  # a running-speech row: running speech all through
        canvas = _speech_piece(rng, length, sr)
    else:
        span = word_span(clip, sr)
        if span is None:
            return None
        word = clip[span[0]:span[1]]
        end = int(rng.uniform(0.35, 0.92) * length)  # where the word ends
        start = max(0, end - len(word))
        word = word[len(word) - (end - start):]
        if rng.random() < job["context"]:
            canvas = _speech_piece(rng, length, sr)
            canvas *= float(np.abs(word).max()) / max(float(np.abs(canvas).max()), 1e-6) * rng.uniform(0.5, 1.2)
            before, after = (int(rng.uniform(*GAP_S) * sr) for _ in range(2))
            canvas[max(0, start - before):min(length, end + after)] = 0.0
        canvas[start:end] = word
        if row["label"] != UNKNOWN_LABEL:  # a keyword: due from its end for label_s; unknowable while said
            first, last = start // spec.hop_length, end // spec.hop_length
            due = min(frames, last + int(job["label_s"] * sr / spec.hop_length))
            weights[first:last] = 0.0
            targets[last:due] = labels.index(row["label"])
    noise = job["noise"]
    if noise and rng.random() < NOISE_PROBABILITY:
        piece = noise_segment(noise[int(rng.integers(len(noise)))], length, rng).astype(np.float64)
        power, speech = float(np.mean(piece ** 2)), active_power(canvas, sample_rate=sr)
        if row["label"] == SILENCE_LABEL or speech <= 0:
            canvas = canvas + piece.astype(np.float32) * rng.uniform(0, 1.0) * 0.3
        elif power > 0:
            canvas = canvas + (piece * np.sqrt(speech / power / 10 ** (rng.uniform(*SNR_DB) / 10))).astype(np.float32)
    canvas = np.clip(canvas, -1.0, 1.0).astype(np.float32)
    feats = logmel(canvas, dataclasses.replace(spec, clip_samples=length))
    return feats.astype(np.float16), targets, weights


def build_set(cfg, spec: FeatureSpec, labels: list[str], split: str, count: int, *, seconds: float, context: float,
              label_s: float, seed: int, workers: int):
    """``count`` sequences around rows of ``split`` (make_sequence, in worker processes): features, targets, weights.
    The running speech around words is always the training speakers' (validation sequences only give the
    frame accuracy printed while training; the benchmark's recordings are what is reported)."""
    from tqdm import tqdm

    rows = read_rows(cfg.prepared_dir, split)
    noise_dir = cfg.dataset_dir / "_background_noise_"
    job = {"spec": spec, "samples": int(seconds * spec.sample_rate), "rows": rows, "labels": labels,
           "seed": [seed, ("train", "validation", "test").index(split)], "speech_files": training_speech(cfg),
           "context": context, "label_s": label_s,
           "noise": [noise_audio(str(p), spec.sample_rate) for p in sorted(noise_dir.glob("*.wav"))]}
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(job,)) as pool:
        out = [r for r in tqdm(pool.imap(make_sequence, range(count), chunksize=32), total=count,
                               desc=f"sequences ({split})", unit="seq") if r is not None]
    x, y, w = (np.stack(parts) for parts in zip(*out))
    return x, y, w


# ---- the model ----------------------------------------------------------------------------------

def sequence_model(one_second, *, stateful_batch: int | None = None):
    """The run's model with every GRU returning sequences (per-frame scores), weights copied by layer name.
    With ``stateful_batch``: an inference model whose GRU states carry over from call to call."""
    import keras

    shape = dict(batch_shape=(stateful_batch, None, one_second.input_shape[-1])) if stateful_batch else \
        dict(shape=(None, one_second.input_shape[-1]))
    inputs = keras.Input(name="features", **shape)
    x = inputs
    for layer in one_second.layers[1:]:
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.GRU):
            cfg.update(return_sequences=True, stateful=bool(stateful_batch))
        x = layer.__class__.from_config(cfg)(x)
    model = keras.Model(inputs, x)
    for layer in one_second.layers[1:]:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    return model


def stream_logmel(audio: np.ndarray, spec: FeatureSpec, *, frames_per_chunk: int = 6000):
    """The log-mel frames of a long recording, chunk by chunk, equal to logmel() of the whole (librosa's
    centred framing). Each chunk is computed by logmel() itself on its audio plus a few hops either side,
    and the frames that the chunk's own zero padding touched are dropped."""
    edge_hops = -(-spec.n_fft // 2 // spec.hop_length)  # hops covering half a frame: 2 for 512/160
    edge = edge_hops * spec.hop_length
    padded = np.pad(np.asarray(audio, np.float32), (edge, edge))  # zeros beyond the ends, as centring adds
    total = 1 + len(audio) // spec.hop_length
    for first in range(0, total, frames_per_chunk):
        count = min(frames_per_chunk, total - first)
        piece = padded[first * spec.hop_length:first * spec.hop_length + (count - 1) * spec.hop_length + 2 * edge]
        feats = logmel(piece, dataclasses.replace(spec, clip_samples=len(piece)))
        yield feats[edge_hops:edge_hops + count]


def continuous_scores(model, audio: np.ndarray, spec: FeatureSpec, *, features: list | None = None) -> np.ndarray:
    """Per-frame scores [F, C] of one recording through one GRU state, never reset. ``features``: a list
    that receives the log-mel chunks too."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    out = []
    for chunk in stream_logmel(audio, spec):
        out.append(np.asarray(model.predict_on_batch(chunk[None]))[0])
        if features is not None:
            features.append(chunk.astype(np.float16))
    return np.concatenate(out)


def mine_sequences(streaming, cfg, spec: FeatureSpec, labels: list[str], *, seconds: float, threshold: float):
    """Hard negatives for the continuous design, as the train stage mines them for the 1-s model: the
    training speakers' running speech (no command word) end to end through one state; wherever a keyword
    scores >= threshold (at most one per second), the ``seconds`` of features ending 200 ms later become a
    sequence whose every frame is ``_unknown_``. Returns (features [n, T, M] float16, targets, weights)."""
    from tqdm import tqdm

    files = training_speech(cfg)
    audio = np.concatenate([load_audio(p, sample_rate=spec.sample_rate) for p in tqdm(files, desc="running speech", unit="file")])
    chunks: list = []
    scores = continuous_scores(streaming, audio, spec, features=chunks)
    feats = np.concatenate(chunks)
    keyword_ids = [i for i, label in enumerate(labels) if label not in NON_KEYWORDS]
    best = scores[:, keyword_ids].max(axis=1)
    frames = 1 + int(seconds * spec.sample_rate) // spec.hop_length
    starts, last = [], -10**9
    for t in np.flatnonzero(best >= threshold):
        if t - last >= 100:
            last = t
            starts.append(min(max(0, t + 20 - frames), len(feats) - frames))
    x = np.stack([feats[s:s + frames] for s in starts]) if starts else np.zeros((0, frames, spec.n_mels), np.float16)
    print(f"mined {len(x)} stretches of running speech ({len(audio) / spec.sample_rate / 3600:.2f} h) where a keyword scored >= {threshold}")
    return x, np.full(x.shape[:2], labels.index(UNKNOWN_LABEL), np.int32), np.ones(x.shape[:2], np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run's export folder (model.keras, manifest.json)")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, as for ./run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=2.5, help="training sequence length")
    ap.add_argument("--train-count", type=int, default=24000)
    ap.add_argument("--val-count", type=int, default=2000)
    ap.add_argument("--context", type=float, default=0.7, help="share of word sequences with running speech around the word")
    ap.add_argument("--label-s", type=float, default=0.4, help="how long after a keyword's end its label is due")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--mine-epochs", type=int, default=0,
                    help="then mine hard negatives from the training speakers' running speech and train this many more epochs")
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, help="seed of the sequences and the training (default: run.seed)")
    ap.add_argument("--model", help="score this continuous.keras (from an earlier run of this script) instead of training")
    ap.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    args = ap.parse_args()

    import keras

    from pipeline.edge.detection import DetectionParams
    from pipeline.long_audio import recordings
    from pipeline.stages.verify import window_scores

    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    if not all((cfg.long_audio_dir / f"{split}.json").is_file() for split in ("validation", "test")):
        sys.exit(f"continuous_state: no always-on recordings in {cfg.long_audio_dir}: give the run's config and --set "
                 "(paths.data among them), and let its verify stage finish first")
    run = Path(args.run)
    for need in ("model.keras", "manifest.json"):
        if not (run / need).is_file():
            sys.exit(f"continuous_state: {run / need} not found: --run takes a finished run's export folder")
    manifest = json.loads((run / "manifest.json").read_text())
    labels = manifest["labels"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    one_second = keras.models.load_model(run / "model.keras")
    seed = cfg.run.seed if args.seed is None else args.seed
    keras.utils.set_random_seed(seed)

    started = time.time()
    if args.model:  # score a model this script trained before
        model, sizes, history, built_s = keras.models.load_model(args.model), {}, {}, 0.0
    else:
        x, y, w = build_set(cfg, spec, labels, "train", args.train_count, seconds=args.seconds, context=args.context,
                            label_s=args.label_s, seed=seed, workers=args.workers)
        vx, vy, vw = build_set(cfg, spec, labels, "validation", args.val_count, seconds=args.seconds,
                               context=args.context, label_s=args.label_s, seed=seed, workers=args.workers)
        sizes, built_s = {"train": len(x), "validation": len(vx)}, time.time() - started
        model = sequence_model(one_second)
        model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            args.learning_rate, decay_steps=args.epochs * (len(x) // 64 + 1), alpha=0.05)),
            loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
        history = model.fit(x.astype(np.float32), y, sample_weight=w, epochs=args.epochs, batch_size=64, verbose=2,
                            validation_data=(vx.astype(np.float32), vy, vw)).history
        if args.mine_epochs:
            mx, my, mw = mine_sequences(sequence_model(model, stateful_batch=1), cfg, spec, labels,
                                        seconds=args.seconds, threshold=0.3)
            x, y, w = np.concatenate([x, mx]), np.concatenate([y, my]), np.concatenate([w, mw])
            sizes["mined"] = len(mx)
            model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
                args.learning_rate / 10, decay_steps=args.mine_epochs * (len(x) // 64 + 1), alpha=0.05)),
                loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
            more = model.fit(x.astype(np.float32), y, sample_weight=w, epochs=args.mine_epochs, batch_size=64, verbose=2,
                             validation_data=(vx.astype(np.float32), vy, vw)).history
            history = {k: history[k] + more[k] for k in history}
        model.save(out / "continuous.keras")
    trained_s = time.time() - started - built_s
    streaming = sequence_model(model, stateful_batch=1)
    stride = 20  # hops between decisions: 200 ms, the staggered design's stride
    params = DetectionParams.from_manifest(manifest)
    designs, fresh_scores = {"staggered": {}, "continuous": {}}, {}
    for split, (audio, events, info) in recordings(cfg, spec).items():
        hours = len(audio) / spec.sample_rate / 3600
        t0 = time.time()
        ends, scores = window_scores(one_second, spec, audio, window_samples=spec.clip_samples,
                                     stride_samples=stride * spec.hop_length, hop=spec.hop_length)
        designs["staggered"][split] = (ends / spec.sample_rate - 0.5 * spec.clip_samples / spec.sample_rate, scores,
                                       events, hours, time.time() - t0)
        t0 = time.time()
        frames = continuous_scores(streaming, audio, spec)
        picks = np.arange(stride - 1, len(frames), stride)
        designs["continuous"][split] = (picks * spec.hop_length / spec.sample_rate, frames[picks], events, hours,
                                        time.time() - t0)
        # drift: the second half again from a fresh state; equal scores = nothing carried over from the first half
        half = len(frames) // 2 // stride * stride
        fresh = continuous_scores(streaming, audio[half * spec.hop_length:], spec)
        carried = frames[half:half + len(fresh)]
        later = slice(6000, None)  # beyond the first minute, the fresh state has forgotten its zero start
        fresh_scores[split] = {"max_abs_difference_after_1_min": round(float(np.abs(fresh[later] - carried[later]).max()), 5),
                               "mean_abs_difference_after_1_min": round(float(np.abs(fresh[later] - carried[later]).mean()), 6)}
    result = {"args": vars(args), "sequences": sizes, "build_s": round(built_s), "train_s": round(trained_s),
              "history": {k: [round(float(v), 4) for v in vals] for k, vals in history.items()}}
    for name, per_split in designs.items():
        result[name] = evaluate(per_split, labels, params)
        r = result[name]
        print(f"{name}: threshold {r['threshold']} (best recall at <= 1 false alarm/hour on validation)")
        for split in ("validation", "test"):
            p = r[split]
            print(f"  {split:<10} recall {p['recall']:.1%} ({p['hits']} hits), {p['false_alarms']} false alarms, "
                  f"alone {p['recall_alone']:.1%}, in phrases {p['recall_in_phrases']:.1%}")
        print("  per half hour at that threshold (hits/keywords, false alarms): " + "; ".join(
            f"{k} {v['hits']}/{v['keywords']}, {v['false_alarms']}" for k, v in r["halves"].items()))
        for thr in (0.3, 0.5, 0.7, 0.9):
            p = next(q for q in r["sweep"]["test"] if abs(q["threshold"] - thr) < 1e-9)
            print(f"  test at {thr}: recall {p['recall']:.1%} (alone {p['recall_alone']:.1%}), {p['false_alarms']} false alarms")
    result["continuous"]["second_half_from_fresh_state"] = fresh_scores
    print("continuous: the second half of each recording scored again from a fresh state, frame scores against the "
          f"carried state's: {fresh_scores}")
    (out / "continuous.json").write_text(json.dumps(result, indent=1))
    print(f"-> {out / 'continuous.json'}")


def evaluate(per_split: dict, labels: list[str], params) -> dict:
    """verify's sweep and threshold choice for one design: {split: (times, window scores, events, hours,
    scoring seconds)} -> chosen threshold, its validation and test points, per-half counts, the sweeps."""
    from pipeline.edge.detection import Smoother, pick_detections
    from pipeline.stages.verify import choose_threshold, match_events, sweep

    curves, smoothed = {}, {}
    for split, (times, scores, events, hours, _) in per_split.items():
        smoother = Smoother(params.smooth_windows)
        smoothed[split] = np.asarray([smoother(row) for row in scores])
        curves[split] = sweep(times, smoothed[split], events, labels, hours=hours, params=params)
    chosen, test = choose_threshold(curves)
    halves = {}
    for split, (times, _, events, hours, _) in per_split.items():  # drift: does the second half do worse?
        for half, (lo, hi) in (("first", (0, hours / 2)), ("second", (hours / 2, hours))):
            inside = (times >= lo * 3600) & (times < hi * 3600)
            evs = [e for e in events if lo * 3600 <= e["start_s"] < hi * 3600]
            dets = pick_detections(times[inside], smoothed[split][inside], labels, threshold=chosen["threshold"],
                                   refractory_s=params.refractory_s)
            hits, false_alarms, _ = match_events(dets, evs)
            halves[f"{split} {half} half"] = {"hits": hits, "keywords": len(evs), "false_alarms": false_alarms}
    return {"threshold": chosen["threshold"], "validation": chosen, "test": test, "halves": halves,
            "scoring_s": {split: round(v[4], 1) for split, v in per_split.items()}, "sweep": curves}


if __name__ == "__main__":
    main()
