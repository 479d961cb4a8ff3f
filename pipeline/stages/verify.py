"""Verify stage: every exported artifact runs on the whole test split (real TFLite interpreter runs
through the edge runtime) and is compared with the Keras model. Results go into manifest.json
``artifacts[*].checks``; then the run's detector (manifest ``detection.design``) is measured on long recordings.

Gates (a failed gate is a non-zero exit and ``verified.ok: false`` in manifest.json):
- float32 artifacts: class scores within FLOAT_TOLERANCE of Keras (the continuous design's model: at
  every frame of a minute of test clips played back to back, one state never reset, against the Keras
  sequence model);
- in-graph frontends: mel power within FRONTEND_POWER_TOLERANCE of librosa's, relative to each frame's
  peak (the metric and the margin are explained in docs/frontend.md);
- TFLite models: builtin ops only.
The quantized variants' accuracy drops are compared with goals and reported as met or missed.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config
from pipeline.dataset import load_clip, read_rows
from pipeline.edge.detection import DetectionParams, pick_detections
from pipeline.edge.run_folder import edge_step
from pipeline.edge.runtime import SplitStreamingStep, StreamGeometry, TFLiteModel, stream_clip
from pipeline.errors import PipelineError
from pipeline.feature_spec import FeatureSpec, librosa_logmel, logmel
from pipeline.frontend import power_error
from pipeline.io import save_figure, write_json_atomic

FLOAT_TOLERANCE = 1e-4  # max |score difference| vs Keras for float32 artifacts
FLOAT_VARIANTS = ("float32", "streaming", "continuous")  # gated by FLOAT_TOLERANCE
# Max mel-power difference vs librosa relative to the frame's peak. Measured noise floor of a correct
# float32 frontend: 5e-6 (TF and TFLite, and librosa's own float32 vs float64: 3e-6); the smallest real
# bug tried (a symmetric instead of periodic window) gives 0.2-0.8. 1e-4 leaves 20x over the floor.
FRONTEND_POWER_TOLERANCE = 1e-4
FRONTEND_RANGE_DB = 60.0  # the reported dB difference is also given for bins within 60 dB of the frame peak
ACCURACY_DROP_GOALS = {"dynamic_range": 0.5, "int8": 1.0, "streaming_int8": 1.0}  # points: reported, not gated
# model_continuous_int8.tflite runs the run's detector on the long-audio test recording at the run's threshold: its
# recall may fall this many points under the float detector's, with at most one false alarm more (reported, not
# gated). Over six held-out hours at thresholds 0.4-0.8 the int8 detector's recall was within 1.7 points of the float
# one's (docs/always_on.md, "The continuous design in int8")
INT8_RECALL_DROP_GOAL = 2.0


class VerificationError(PipelineError, RuntimeError):
    pass


def test_audio(cfg: Config, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The valid test clips as audio [N, clip_samples] and their label indices [N]."""
    rows = read_rows(cfg.prepared_dir, "test")
    valid = np.load(cfg.features_dir / "test_valid.npy")
    labels = np.load(cfg.features_dir / "test_labels.npy")[valid]
    audio = np.stack([load_clip(row, spec) for row, ok in zip(rows, valid) if ok]).astype(np.float32)
    return audio, labels


def non_builtin_ops(ops: list[str]) -> list[str]:
    """Flex (SELECT_TF_OPS) and custom ops; a phone app would need extra delegates for them."""
    return [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]


def compare(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {"accuracy": round(float((scores.argmax(1) == labels).mean()), 6),
            "max_abs_diff_vs_keras": float(np.abs(scores - reference).max()),
            "top1_agreement": round(float((scores.argmax(1) == reference.argmax(1)).mean()), 6)}


def frontend_diff(got: np.ndarray, reference: np.ndarray) -> dict:
    """An in-graph log-mel [..., T, M] against librosa's: the gated power error, and dB figures."""
    diff = np.abs(got - reference)
    in_range = reference >= reference.max(axis=-1, keepdims=True) - FRONTEND_RANGE_DB
    return {"logmel_power_error": float(power_error(got, reference).max()),
            "logmel_power_tolerance": FRONTEND_POWER_TOLERANCE,
            "logmel_max_abs_diff_db": float(diff.max()),
            "logmel_max_abs_diff_db_within_60db": float(diff[in_range].max())}


def frontend_failures(name: str, checks: dict) -> list[str]:
    if checks["logmel_power_error"] <= FRONTEND_POWER_TOLERANCE:
        return []
    return [f"{name}: log-mel differs from librosa: mel-power error {checks['logmel_power_error']:.2e} of the frame "
            f"peak > {FRONTEND_POWER_TOLERANCE} (max {checks['logmel_max_abs_diff_db']:.2e} dB)"]


def _bar(items, name: str):
    return tqdm(items, desc=f"verify {name}", unit="clip", leave=False, disable=None)


def check_saved_model(path: Path, features: np.ndarray, audio: np.ndarray, reference, labels) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    t0 = time.perf_counter()
    scores = np.concatenate([loaded.signatures["features"](features=tf.constant(features[i:i + 256]))["scores"].numpy()
                             for i in range(0, len(features), 256)])
    checks = {"mean_latency_ms_per_clip_batched": round(1000 * (time.perf_counter() - t0) / len(features), 4)}
    checks.update(compare(scores, reference, labels))
    outs = [loaded.signatures["audio"](audio=tf.constant(audio[i:i + 256])) for i in range(0, len(audio), 256)]
    checks["audio_signature"] = compare(np.concatenate([o["scores"].numpy() for o in outs]), reference, labels)
    checks["audio_signature"].update(frontend_diff(np.concatenate([o["logmel"].numpy() for o in outs]), features))
    return checks


def op_checks(model: TFLiteModel) -> dict:
    ops = model.ops
    return {"ops": ops, "non_builtin_ops": non_builtin_ops(ops), "builtins_only": not non_builtin_ops(ops)}


def check_tflite(art: dict, run_dir: Path, geometry: StreamGeometry, spec: FeatureSpec, features, audio,
                 reference, labels) -> dict:
    """Runs one TFLite artifact over the test clips; returns its checks."""
    model = TFLiteModel(run_dir / art["path"])
    checks = op_checks(model)
    variant, name = art["variant"], art["path"]
    if variant == "streaming_frontend":
        split = SplitStreamingStep(model, None, state_names=geometry.gru_state_names, keep_frames=True)
        frames = []
        for clip in _bar(audio, name):
            split.frames = []
            stream_clip(split, geometry, clip)
            frames.append(np.stack(split.frames))
        checks.update(frontend_diff(np.stack(frames), features))
        checks["mean_latency_ms_per_hop"] = round(model.mean_latency_ms, 5)
        return checks
    if variant in ("streaming", "streaming_int8"):
        step = edge_step(model, art, run_dir, geometry)
        scores = np.stack([stream_clip(step, geometry, clip) for clip in _bar(audio, name)])
        hops = len(audio) * (spec.clip_samples // geometry.hop + geometry.delay)
        checks["mean_latency_ms_per_hop"] = round(1000 * step.seconds / hops, 5)
        checks["real_time_factor"] = round(checks["mean_latency_ms_per_hop"] / (1000 * geometry.hop / spec.sample_rate), 6)
    elif art["input"] == "audio":
        outs = [model({"audio": clip[None]}) for clip in _bar(audio, name)]
        scores = np.concatenate([o["scores"] for o in outs])
        checks.update(frontend_diff(np.concatenate([o["logmel"] for o in outs]), features))
        checks["mean_latency_ms_per_clip"] = round(model.mean_latency_ms, 4)
    else:
        scores = np.concatenate([model({"features": f[None]})["scores"] for f in _bar(features, name)])
        checks["mean_latency_ms_per_clip"] = round(model.mean_latency_ms, 4)
    checks.update(compare(scores, reference, labels))
    return checks


def continuous_reference(run_dir: Path, spec: FeatureSpec, audio: np.ndarray, *, seconds: float = 60.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(recording, scores [F, C]): the first ``seconds`` of the test clips played back to back, and the Keras
    sequence model's scores after every log-mel frame of it, one state never reset: what check_continuous
    compares each continuous artifact with."""
    import keras

    from pipeline.continuous import continuous_scores, sequence_model

    recording = audio[:max(1, int(seconds * spec.sample_rate) // spec.clip_samples)].reshape(-1)
    trained = keras.models.load_model(run_dir / "model_continuous.keras", compile=False)
    return recording, continuous_scores(sequence_model(trained, stateful_batch=1), [recording], spec)[0]


def check_continuous(art: dict, run_dir: Path, geometry: StreamGeometry, spec: FeatureSpec,
                     recording: np.ndarray, reference: np.ndarray) -> dict:
    """A continuous design's TFLite artifact (float, or the int8 network behind its frontend), never reset, over
    ``recording`` against the Keras sequence model's ``reference`` scores (continuous_reference)."""
    from pipeline.edge.detection import ContinuousScorer

    model = TFLiteModel(run_dir / art["path"])
    checks = op_checks(model)
    step = edge_step(model, art, run_dir, geometry)
    scorer, hop = ContinuousScorer(step, geometry, stride_hops=1, sample_rate=spec.sample_rate), geometry.hop
    hops = len(recording) // hop
    streamed = np.stack([scores for k in _bar(range(hops), art["path"] + " (hops)")
                         for _, scores in scorer.push(recording[k * hop:(k + 1) * hop])])  # every frame, in order
    reference = reference[:len(streamed)]
    checks.update({"seconds": round(len(recording) / spec.sample_rate, 1), "frames": len(streamed),
                   "max_abs_diff_vs_keras": float(np.abs(streamed - reference).max()),
                   "mean_abs_diff_vs_keras": float(np.abs(streamed - reference).mean()),
                   "top1_agreement": float((streamed.argmax(1) == reference.argmax(1)).mean()),
                   "mean_latency_ms_per_hop": round(1000 * step.seconds / hops, 5)})
    checks["real_time_factor"] = round(checks["mean_latency_ms_per_hop"] / (1000 * hop / spec.sample_rate), 6)
    return checks


def judge(art: dict, checks: dict, keras_accuracy: float) -> tuple[list[str], list[str]]:
    """(failed gates, missed goals) of one artifact's checks; adds the verdict fields to ``checks``."""
    name, failures, missed = art["path"], [], []
    if checks.get("builtins_only") is False:
        failures.append(f"{name}: non-builtin ops {checks['non_builtin_ops']}")
    if "logmel_power_error" in checks:
        failures += frontend_failures(name, checks)
    if "audio_signature" in checks:
        failures += frontend_failures(f"{name} (audio signature)", checks["audio_signature"])
    if art["variant"] in FLOAT_VARIANTS and "max_abs_diff_vs_keras" in checks:
        checks["tolerance"] = FLOAT_TOLERANCE
        checks["parity_ok"] = checks["max_abs_diff_vs_keras"] <= FLOAT_TOLERANCE
        if not checks["parity_ok"]:
            reference = "the Keras sequence model" if art["variant"] == "continuous" else "Keras"
            failures.append(f"{name}: max score difference vs {reference} {checks['max_abs_diff_vs_keras']:.2e} "
                            f"> {FLOAT_TOLERANCE}")
    if "accuracy" not in checks:
        return failures, missed
    checks["accuracy_drop_points"] = round(100 * (keras_accuracy - checks["accuracy"]), 3)
    if art["variant"] in ACCURACY_DROP_GOALS:
        goal = checks["accuracy_drop_goal_points"] = ACCURACY_DROP_GOALS[art["variant"]]
        checks["accuracy_drop_within_goal"] = checks["accuracy_drop_points"] <= goal
        if not checks["accuracy_drop_within_goal"]:
            missed.append(f"{name}: accuracy drop {checks['accuracy_drop_points']} points > goal {goal}")
    return failures, missed


def run(cfg: Config) -> Path:
    import keras

    run_dir = cfg.run_dir
    manifest = json.loads((run_dir / "export.json").read_text())
    spec = FeatureSpec.from_dict(manifest["feature_spec"])
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    audio, labels = test_audio(cfg, spec)
    features = librosa_logmel(audio, spec)  # librosa itself: the reference input and frontend reference
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    reference = model.predict(features, batch_size=256, verbose=0)
    keras_accuracy = float((reference.argmax(1) == labels).mean())
    print(f"verify: Keras model {keras_accuracy:.4f} on {len(labels)} test clips")
    failures, missed = [], []
    continuous = None  # (recording, Keras scores), made for the first continuous artifact and shared
    for art in manifest["artifacts"]:
        if art["kind"] == "saved_model":
            checks = check_saved_model(run_dir / art["path"], features, audio, reference, labels)
        elif art["variant"] in ("continuous", "continuous_int8"):
            continuous = continuous or continuous_reference(run_dir, spec, audio)
            checks = check_continuous(art, run_dir, geometry, spec, *continuous)
        else:
            checks = check_tflite(art, run_dir, geometry, spec, features, audio, reference, labels)
        if "accuracy" in checks:
            checks["num_examples"] = int(len(labels))
        failed, short = judge(art, checks, keras_accuracy)
        failures += failed
        missed += short
        art["checks"] = checks
        print(f"verify: {art['path']:34s} " + summary_line(checks))

    manifest["config"] = cfg.to_dict()  # verify-only keys (export.long_audio_minutes) may be newer than export's
    if cfg.export.long_audio_minutes > 0:
        la = manifest["long_audio"] = long_audio_eval(cfg, run_dir, manifest, model, spec)
        manifest["detection"]["threshold"] = la["threshold"]
        v = la["validation"]
        print(f"verify: always-on ({la['design']} design), validation recordings ({la['validation_minutes']} min, {v['keywords']} keywords): threshold "
              f"{la['threshold']} gives recall {v['recall']:.3f} at {v['false_alarms_per_hour']:.1f} false alarms/hour")
        print(f"verify: always-on, test recording ({la['keywords']} keywords, voices never tuned on): recall "
              f"{la['recall']:.3f} ({la['test']['hits']}/{la['keywords']}) at {la['false_alarms_per_hour']:.1f} false "
              f"alarms/hour ({la['false_alarms']}) -> long_audio.json, det_curve.png")
        if by_snr := la["test"]["recall_alone_by_snr"]:
            print("verify: always-on, test recording, words said alone by noise level: " + ", ".join(
                f"{snr} {v['recall']:.0%} ({v['hits']}/{v['keywords']})" for snr, v in by_snr.items()))
        if q := la.get("quiet_test"):
            print(f"verify: always-on, quiet test recording (commands said alone, then running speech, one low noise "
                  f"floor): recall {q['recall']:.3f} ({q['hits']}/{q['keywords']}) at {q['false_alarms_per_hour']:.1f} "
                  f"false alarms/hour ({q['false_alarms']})")
        if q := la.get("test_int8"):
            print(f"verify: always-on, test recording through {q['model']} (the edge runtime, int8): recall "
                  f"{q['recall']:.3f} ({q['hits']}/{q['keywords']}) at {q['false_alarms_per_hour']:.1f} false alarms/hour "
                  f"({q['false_alarms']}); recall drop against the float detector {q['recall_drop_points']:+.1f} points")
            if not q["within_goal"]:
                missed.append(f"{q['model']}: test recording recall {q['recall_drop_points']} points under the float "
                              f"detector's (goal {INT8_RECALL_DROP_GOAL}) or more than one false alarm more")
    manifest["verified"] = {"keras_test_accuracy": round(keras_accuracy, 6), "ok": not failures, "failures": failures,
                            "goals_missed": missed}
    write_json_atomic(run_dir / "manifest.json", manifest)
    for line in missed:
        print(f"verify: goal missed: {line}")
    if failures:
        raise VerificationError("verify failed: " + "; ".join(failures))
    print(f"verify: all {len(manifest['artifacts'])} artifacts pass their gates"
          + (f"; {len(missed)} goal(s) missed" if missed else "; every goal met")
          + f" -> {run_dir / 'manifest.json'}")
    return run_dir / "manifest.json"


def summary_line(checks: dict) -> str:
    parts = []
    if "accuracy" in checks:
        parts.append(f"acc {checks['accuracy']:.4f}  max|diff| {checks['max_abs_diff_vs_keras']:.2e}  "
                     f"top-1 agree {checks['top1_agreement']:.4f}")
    if "frames" in checks:
        parts.append(f"{checks['frames']} frames of {checks['seconds']} s, one state  max|diff| "
                     f"{checks['max_abs_diff_vs_keras']:.2e} vs the Keras sequence model")
    front = checks.get("audio_signature", checks)
    if "logmel_power_error" in front:
        parts.append(f"log-mel power err {front['logmel_power_error']:.1e} ({front['logmel_max_abs_diff_db']:.1e} dB max)")
    return "  ".join(parts)


# ---- continuous detection on long recordings of running speech ---------------------------------

def window_scores(model, spec: FeatureSpec, audio: np.ndarray, *, window_samples: int, stride_samples: int,
                  hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(end samples [W], scores [W, C]) of the detection windows, computed in batches with the Keras model
    on librosa features. The staggered streaming states (pipeline/edge/detection.py) give exactly these
    windows: the one ending at every multiple of the stride from ``window_samples`` on, within the whole
    hops received; verify checks on every test clip that the streaming model gives the Keras scores
    (within 1e-4), and this is ~5x faster over hours of audio."""
    whole = len(audio) // hop * hop
    ends = np.arange(window_samples, whole + 1, stride_samples)
    scores = []
    for i in range(0, len(ends), 512):
        batch = np.stack([audio[end - window_samples:end] for end in ends[i:i + 512]])
        scores.append(model.predict(logmel(batch, spec), batch_size=512, verbose=0))
    return ends, np.concatenate(scores) if scores else np.zeros((0, model.output_shape[-1]), np.float32)


def match_events(detections: list, events: list[dict], *, early_s: float = 0.5, late_s: float = 1.0
                 ) -> tuple[int, int, list[bool]]:
    """(hits, false alarms, hit per event): a detection hits an unmatched keyword event of the same label
    whose span [start - early_s, end + late_s] contains the detection time; anything else is a false alarm."""
    used, unmatched = match_detections(detections, events, early_s=early_s, late_s=late_s)
    return len(detections) - len(unmatched), len(unmatched), used


def match_detections(detections: list, events: list[dict], *, early_s: float = 0.5, late_s: float = 1.0
                     ) -> tuple[list[bool], list]:
    """match_events as (hit per event, the detections that hit nothing: the false alarms themselves)."""
    used, unmatched = [False] * len(events), []
    for det in detections:
        for i, ev in enumerate(events):
            if not used[i] and ev["label"] == det.label and ev["start_s"] - early_s <= det.time_s <= ev["end_s"] + late_s:
                used[i] = True
                break
        else:
            unmatched.append(det)
    return used, unmatched


def false_alarms_heard(false_alarms: list, transcript: list[dict], *, before_s: float = 1.5) -> list[dict]:
    """Each false alarm with what the recording's transcript says was spoken in the ``before_s`` before
    it (a detection comes after the word that fired it): where to look first."""
    return [{"time_s": round(d.time_s, 2), "label": d.label, "score": round(d.score, 3),
             "heard": " | ".join(f"[{p['kind']}] {p['text']}" for p in transcript
                                 if p["start_s"] <= d.time_s and p["end_s"] >= d.time_s - before_s)}
            for d in false_alarms]


def recall_alone_by_snr(hit: list[bool], events: list[dict]) -> dict[str, dict]:
    """Recall of the words said alone by the SNR of the 30-s block they were said in, loudest noise last;
    a level with no word said alone is left out (its recall would be NaN)."""
    alone = [(h, e["snr_db"]) for h, e in zip(hit, events) if e["kind"] == "alone" and e["snr_db"] is not None]
    out = {}
    for snr in sorted({level for _, level in alone}, reverse=True):
        of_snr = [h for h, level in alone if level == snr]
        out[f"{snr:g} dB"] = {"recall": round(float(np.mean(of_snr)), 4), "hits": int(sum(of_snr)),
                              "keywords": len(of_snr)}
    return out


# every 0.01 up to 0.95, then finer: a model whose scores spread (one continuous state, long windows) has
# its operating point anywhere in the range, and a coarse grid would hand away recall
THRESHOLDS = np.round(np.concatenate([np.arange(0.10, 0.95, 0.01), np.arange(0.95, 0.999, 0.005),
                                      [0.997, 0.998, 0.999]]), 4)
TARGET_FALSE_ALARMS_PER_HOUR = 1.0


def sweep(times: np.ndarray, smoothed: np.ndarray, events: list[dict], labels: list[str], *, hours: float,
          params: DetectionParams) -> list[dict]:
    """Recall and false alarms per hour at every threshold of THRESHOLDS (steps 4 of the detection
    algorithm replayed on the same smoothed windows)."""
    points = []
    for threshold in THRESHOLDS:
        detections = pick_detections(times, smoothed, labels, threshold=float(threshold), refractory_s=params.refractory_s)
        hits, false_alarms, hit = match_events(detections, events)
        recall = {kind: float(np.mean(of_kind)) if (of_kind := [h for h, e in zip(hit, events) if e["kind"] == kind])
                  else None for kind in ("alone", "phrase")}  # None, not NaN: manifest.json is read by browsers too
        points.append({"threshold": float(threshold), "recall": hits / max(1, len(events)), "hits": hits,
                       "false_alarms": false_alarms, "false_alarms_per_hour": false_alarms / hours,
                       "recall_alone": recall["alone"], "recall_in_phrases": recall["phrase"]})
    return points


def join_recordings(parts: list[tuple]) -> tuple[np.ndarray, np.ndarray, list[dict], float, dict]:
    """Several recordings as one: [(decision times, scores, events, seconds, counts)] -> the same, with each
    recording's times and events shifted by the length of those before it, and the counts added up."""
    times, scores, events, offset, counts = [], [], [], 0.0, {}
    for t, s, ev, seconds, info in parts:
        times.append(np.asarray(t) + offset)
        scores.append(s)
        events += [{**e, "start_s": e["start_s"] + offset, "end_s": e["end_s"] + offset} for e in ev]
        offset += seconds
        counts = {key: counts.get(key, 0) + value if key != "voices" else value for key, value in info.items()}
    return np.concatenate(times), np.concatenate(scores), events, offset, counts


def point_at(curve: list[dict], threshold: float) -> dict:
    """A sweep's point at one of its thresholds."""
    return next(p for p in curve if p["threshold"] == threshold)


def pick(curve: list[dict]) -> dict:
    """The point of a validation sweep with the best recall at <= TARGET_FALSE_ALARMS_PER_HOUR (the fewest
    false alarms when no threshold gets there)."""
    ok = [p for p in curve if p["false_alarms_per_hour"] <= TARGET_FALSE_ALARMS_PER_HOUR]
    return (max(ok, key=lambda p: (p["recall"], -p["threshold"])) if ok
            else min(curve, key=lambda p: (p["false_alarms"], -p["recall"])))


def choose_threshold(curves: dict[str, list[dict]]) -> tuple[dict, dict]:
    """(validation point, test point) at the validation recordings' pick."""
    chosen = pick(curves["validation"])
    return chosen, point_at(curves["test"], chosen["threshold"])


def continuous_windows(frame_scores: np.ndarray, *, samples: int, spec: FeatureSpec, stride_hops: int, delay: int,
                       smooth_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-3 of the continuous design replayed on one recording's frame scores [F, C] (``samples`` long):
    (decision times in s, smoothed scores [N, C]), as the edge runtime reads and smooths them."""
    from pipeline.continuous import decisions
    from pipeline.edge.detection import smoothed_rows

    frames, scores = decisions(frame_scores, stride_hops=stride_hops, delay=delay, whole_hops=samples // spec.hop_length)
    return frames * spec.hop_length / spec.sample_rate, smoothed_rows(scores, smooth_windows, frame_scores.shape[1])


def detector_parts(made: dict, spec: FeatureSpec, labels: list[str], params: DetectionParams, *, stride: int,
                   model=None, continuous=None, delay: int = 0) -> dict[str, tuple]:
    """Each recording of ``made`` ({name: (audio, events, counts)}) through a fresh detector, as
    join_recordings' parts. The continuous design runs ``continuous`` (its Keras model) through one state per
    whole recording, as the edge runtime does (``delay``: the geometry's); the staggered design runs the 1-s
    ``model`` on windows every ``stride`` samples."""
    from pipeline.edge.detection import smoothed_rows, window_time_s

    if params.design == "continuous":
        from pipeline.continuous import continuous_scores, sequence_model

        stateful = sequence_model(continuous, stateful_batch=len(made))
        frame_scores = dict(zip(made, continuous_scores(stateful, [audio for audio, _, _ in made.values()], spec)))
    parts = {}
    for name, (audio, events, info) in made.items():
        if params.design == "continuous":
            times, smoothed = continuous_windows(frame_scores[name], samples=len(audio), spec=spec,
                                                 stride_hops=stride // spec.hop_length, delay=delay,
                                                 smooth_windows=params.smooth_windows)
        else:
            ends, scores = window_scores(model, spec, audio, window_samples=spec.clip_samples, stride_samples=stride,
                                         hop=spec.hop_length)
            times = np.asarray([window_time_s(end, spec.clip_samples, spec.sample_rate) for end in ends])
            smoothed = smoothed_rows(scores, params.smooth_windows, len(labels))
        parts[name] = (times, smoothed, events, len(audio) / spec.sample_rate, info)
    return parts


def validation_pick(cfg: Config, continuous, spec: FeatureSpec, labels: list[str]) -> dict:
    """The validation point this stage would pick for the continuous model ``continuous`` (Keras), from the
    validation recordings at the default detection parameters, with their counts: the train stage keeps the
    best of ``train.continuous_candidates`` by it."""
    from pipeline.long_audio import recordings, validation_names

    params = DetectionParams(design="continuous")
    geometry = StreamGeometry.from_spec(spec, cfg.model.gru_units)
    stride = params.to_manifest(geometry=geometry, window_samples=spec.clip_samples,
                                sample_rate=spec.sample_rate)["stride_samples"]
    names = validation_names(cfg)
    parts = detector_parts(recordings(cfg, spec, names=names), spec, labels, params, stride=stride,
                           continuous=continuous, delay=geometry.delay)
    times, smoothed, events, seconds, info = join_recordings([parts[name] for name in names])
    return {**pick(sweep(times, smoothed, events, labels, hours=seconds / 3600, params=params)),
            "keywords": info["keywords"], "hours": round(seconds / 3600, 3)}


def long_audio_eval(cfg: Config, run_dir: Path, manifest: dict, model, spec: FeatureSpec) -> dict:
    """The always-on benchmark (pipeline/long_audio.py): the threshold is the one with the best recall at
    <= TARGET_FALSE_ALARMS_PER_HOUR over the validation recordings, quiet ones included (counted as one); the
    test recording, never tuned on, gives the reported figures, and the quiet test recording (if any) its own
    beside them. Writes long_audio.json and det_curve.png; returns the summary for the manifest."""
    from pipeline.long_audio import recordings, transcript, validation_names

    labels = manifest["labels"]
    params = DetectionParams.from_manifest(manifest)
    continuous = None
    if params.design == "continuous":
        import keras

        continuous = keras.models.load_model(run_dir / "model_continuous.keras", compile=False)
    made = recordings(cfg, spec)
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    detected = detector_parts(made, spec, labels, params, stride=manifest["detection"]["stride_samples"],
                              model=model, continuous=continuous, delay=geometry.delay)
    test_recording = made.pop("test")  # the int8 detector's below; the other recordings' audio can go
    del made
    groups = {"validation": validation_names(cfg), "test": ["test"]}
    if "test_quiet" in detected:
        groups["quiet_test"] = ["test_quiet"]
    curves, counts = {}, {}
    for group, names in groups.items():  # the validation recordings count as one long one
        times, smoothed, events, seconds, info = join_recordings([detected[name] for name in names])
        curves[group] = sweep(times, smoothed, events, labels, hours=seconds / 3600, params=params)
        counts[group] = {**info, "hours": round(seconds / 3600, 3)}
    chosen, test = choose_threshold(curves)
    times, smoothed, events, _, _ = detected["test"]
    hit, false_alarms = match_detections(pick_detections(times, smoothed, labels, threshold=chosen["threshold"],
                                                         refractory_s=params.refractory_s), events)
    heard = false_alarms_heard(false_alarms, transcript(cfg, "test"))
    by_snr = recall_alone_by_snr(hit, events)
    summary = {"minutes": cfg.export.long_audio_minutes, "validation_minutes": round(counts["validation"]["hours"] * 60, 1),
               "design": params.design, "threshold": chosen["threshold"],
               "sentence_words": cfg.export.long_audio_words,  # held-out: no training sentence says the recordings' words
               "picked_on": f"validation recordings ({cfg.export.long_audio_validation_recordings} + "
                            f"{cfg.export.long_audio_quiet_recordings} quiet, x {cfg.export.long_audio_minutes} min): "
                            f"best recall at <= {TARGET_FALSE_ALARMS_PER_HOUR} false alarm/hour",
               "validation": {**_point(chosen), **counts["validation"]},
               "test": {**_point(test), **counts["test"], "recall_alone_by_snr": by_snr},
               # the reported figures: the test recording at the validation threshold
               "keywords": counts["test"]["keywords"], "recall": round(test["recall"], 4),
               "false_alarms": test["false_alarms"], "false_alarms_per_hour": round(test["false_alarms_per_hour"], 3),
               "goal": "recall >= 0.95 at <= 1 false alarm per hour"}
    if "quiet_test" in curves:  # the room of the outside check: commands said alone, then running speech
        summary["quiet_test"] = {**_point(point_at(curves["quiet_test"], chosen["threshold"])), **counts["quiet_test"]}
    int8 = [art for art in manifest["artifacts"] if art["variant"] == "continuous_int8"]
    if int8 and params.design == "continuous":  # the phone's int8 detector on the same hour, at the same threshold
        audio, events, _ = test_recording
        step = edge_step(TFLiteModel(run_dir / int8[0]["path"]), int8[0], run_dir, geometry)
        point = edge_detector_point(step, geometry, labels, replace(params, threshold=chosen["threshold"]), audio, events,
                                    spec)
        drop = round(100 * (test["recall"] - point["recall"]), 2)
        summary["test_int8"] = {"model": int8[0]["path"], **point, "recall_drop_points": drop,
                                "recall_drop_goal_points": INT8_RECALL_DROP_GOAL,
                                "within_goal": drop <= INT8_RECALL_DROP_GOAL
                                and point["false_alarms"] <= test["false_alarms"] + 1}
    write_json_atomic(run_dir / "long_audio.json", {**summary, "test_false_alarms": heard, "sweep": curves})
    plot_det(curves, run_dir / "det_curve.png", chosen["threshold"], params.design)
    return summary


def edge_detector_point(step, geometry: StreamGeometry, labels: list[str], params: DetectionParams, audio: np.ndarray,
                        events: list[dict], spec: FeatureSpec) -> dict:
    """Recall and false alarms of the edge runtime's Detector (``step``: a TFLite streaming step) on a recording,
    fed in 10-s blocks as ``./run detect`` feeds a file."""
    from pipeline.edge.detection import Detector

    detector = Detector(step, geometry, labels, params, window_samples=spec.clip_samples, sample_rate=spec.sample_rate)
    block = 10 * spec.sample_rate
    found = [d for start in _bar(range(0, len(audio), block), "edge detector (10-s blocks)")
             for d in detector.feed(audio[start:start + block])]
    hit, false_alarms = match_detections(found, events)
    hours = len(audio) / spec.sample_rate / 3600
    return {"recall": round(float(np.mean(hit)) if hit else 0.0, 4), "hits": int(sum(hit)), "keywords": len(events),
            "false_alarms": len(false_alarms), "false_alarms_per_hour": round(len(false_alarms) / hours, 3)}


def _point(p: dict) -> dict:
    return {"recall": round(p["recall"], 4), "hits": p["hits"], "false_alarms": p["false_alarms"],
            "false_alarms_per_hour": round(p["false_alarms_per_hour"], 3),
            **{key: None if p[key] is None else round(p[key], 4) for key in ("recall_alone", "recall_in_phrases")}}


def plot_det(curves: dict[str, list[dict]], path: Path, threshold: float, design: str) -> None:
    """False-reject rate against false alarms per hour, one point per threshold, per recording."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for split, points in curves.items():
        fa = [max(p["false_alarms_per_hour"], 0.1) for p in points]
        frr = [100 * (1 - p["recall"]) for p in points]
        line, = ax.plot(fa, frr, "o-", ms=3, label=f"{split.replace('_', ' ')} recording")
        chosen = point_at(points, threshold)
        ax.plot([max(chosen["false_alarms_per_hour"], 0.1)], [100 * (1 - chosen["recall"])], "*", ms=13,
                color=line.get_color(), label=f"{split.replace('_', ' ')} at threshold {threshold}: recall {chosen['recall']:.1%}, "
                                              f"{chosen['false_alarms_per_hour']:.1f} FA/h")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour (0 drawn at 0.1)")
    ax.set_ylabel("false rejects (%)")
    ax.set_title(f"Always-on ({design} design): running speech from held-out voices")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=100)
