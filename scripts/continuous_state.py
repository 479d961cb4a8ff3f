"""The always-on design comparison: one continuous GRU state against the five staggered, reset states.

The pipeline trains the continuous design (pipeline/continuous.py, ``train.continuous_sequences``) and
ships it as the run's detector. This script measures both designs on a finished run's weights, on the
run's own always-on benchmark (the verify stage's two cached recordings: the validation one picks the
threshold, the test one gives the figures), with any training size:

1. Training sequences and targets: pipeline/continuous.py (``--seconds``, ``--train-count``).
2. The model: the run's 1-s architecture with every GRU returning sequences, started from the run's 1-s
   weights (model.keras), trained ``--epochs``; ``--mine-epochs`` adds hard negatives mined from the
   training speakers' running speech.
3. Scoring: the staggered design on the 1-s weights (verify's batched windows) and the continuous one
   (one state through each recording, a decision every 200 ms), then the same smoothing, picking and
   event matching as verify, and a check for drift (the second half again from a fresh state).

Usage (from the repo root; the run's config, with the same --set as the run):
    .venv/bin/python scripts/continuous_state.py --run exports/demo --out /tmp/continuous [--set key=value ...]
Writes DIR/continuous.keras and DIR/continuous.json, and prints both designs' figures on the same threshold grid.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import load_audio  # noqa: E402
from pipeline.config import UNKNOWN_LABEL, load_config  # noqa: E402
from pipeline.continuous import build_sequences, continuous_scores, decisions, sequence_model, stream_logmel  # noqa: E402
from pipeline.dataset import training_speech  # noqa: E402
from pipeline.edge.detection import NON_KEYWORDS  # noqa: E402
from pipeline.feature_spec import FeatureSpec  # noqa: E402


# ---- mining -------------------------------------------------------------------------------

def mine_sequences(streaming, cfg, spec: FeatureSpec, labels: list[str], *, seconds: float, threshold: float):
    """Hard negatives for the continuous design, as the train stage mines them for the 1-s model: the
    training speakers' running speech (no command word) end to end through one state; wherever a keyword
    scores >= threshold (at most one per second), the ``seconds`` of features ending 200 ms later become a
    sequence whose every frame is ``_unknown_``. Returns (features [n, T, M] float16, targets, weights)."""
    from tqdm import tqdm

    files = training_speech(cfg)
    audio = np.concatenate([load_audio(p, sample_rate=spec.sample_rate) for p in tqdm(files, desc="running speech", unit="file")])
    scores = continuous_scores(streaming, [audio], spec)[0]
    feats = np.concatenate(list(stream_logmel(audio, spec))).astype(np.float16)
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
    from pipeline.edge.runtime import StreamGeometry
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
    delay = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"]).delay  # hops until a frame completes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    one_second = keras.models.load_model(run / "model.keras")
    seed = cfg.run.seed if args.seed is None else args.seed
    keras.utils.set_random_seed(seed)

    started = time.time()
    if args.model:  # score a model this script trained before
        model, sizes, history, built_s = keras.models.load_model(args.model), {}, {}, 0.0
    else:
        x, y, w = build_sequences(cfg, spec, labels, "train", args.train_count, seconds=args.seconds, seed=seed,
                                  workers=args.workers)
        vx, vy, vw = build_sequences(cfg, spec, labels, "validation", args.val_count, seconds=args.seconds, seed=seed,
                                     workers=args.workers)
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
        if split not in ("validation", "test"):
            continue  # export.long_audio_validation_recordings > 1: this comparison uses the first hour only
        hours = len(audio) / spec.sample_rate / 3600
        t0 = time.time()
        ends, scores = window_scores(one_second, spec, audio, window_samples=spec.clip_samples,
                                     stride_samples=stride * spec.hop_length, hop=spec.hop_length)
        designs["staggered"][split] = (ends / spec.sample_rate - 0.5 * spec.clip_samples / spec.sample_rate, scores,
                                       events, hours, time.time() - t0)
        t0 = time.time()
        frames = continuous_scores(streaming, [audio], spec)[0]
        picks, picked = decisions(frames, stride_hops=stride, delay=delay, whole_hops=len(audio) // spec.hop_length)
        designs["continuous"][split] = (picks * spec.hop_length / spec.sample_rate, picked, events, hours,
                                        time.time() - t0)
        # drift: the second half again from a fresh state; equal scores = nothing carried over from the first half
        half = len(frames) // 2 // stride * stride
        fresh = continuous_scores(streaming, [audio[half * spec.hop_length:]], spec)[0]
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
    from pipeline.edge.detection import pick_detections, smoothed_rows
    from pipeline.stages.verify import choose_threshold, match_events, sweep

    curves, smoothed = {}, {}
    for split, (times, scores, events, hours, _) in per_split.items():
        smoothed[split] = smoothed_rows(scores, params.smooth_windows, len(labels))
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
