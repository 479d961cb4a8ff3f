"""Continuous keyword detection with the streaming model, and its evaluation on long audio.

The model was trained on 1-s clips that start from silence, so one GRU state carried forever would
drift away from anything it saw in training. Instead ``streams`` copies of the streaming model run
side by side, staggered by ``stride`` = 1 s / streams: each starts from the zero state, takes one
second of audio hop by hop (plus the flush hops), reports, and starts again. Every stride yields the
scores of the latest 1-s window, equal to the 1-s model's on that window, for ``streams`` x one hop
of compute per hop (a few % of a core). Scores are smoothed over ``smooth`` windows; a keyword whose
smoothed score passes the threshold fires, then a refractory period mutes all keywords.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL

DEFAULT_THRESHOLD = 0.8
SMOOTH_WINDOWS = 3
REFRACTORY_S = 1.0
STREAMS = 5  # 200-ms decision stride


@dataclass(frozen=True)
class Detection:
    time_s: float  # centre of the 1-s window that fired
    label: str
    score: float


def window_scores(run_step, geometry, audio: np.ndarray, *, clip_samples: int, streams: int = STREAMS
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of 1-s windows every clip_samples/streams samples, computed with staggered streaming states.

    Returns (window end times in samples [W], scores [W, C]).
    """
    hop = geometry.hop
    hops_per_clip = clip_samples // hop
    stride = hops_per_clip // streams
    tail = np.zeros((1, hop), np.float32)  # the 1-s model sees zeros after its clip
    states = [geometry.zero_state() for _ in range(streams)]
    ends, scores = [], []
    total_hops = len(audio) // hop
    for k in range(total_hops):
        for s in range(streams):
            start_hop = s * stride
            if k < start_hop:
                continue
            position = (k - start_hop) % hops_per_clip  # hop index inside this stream's current window
            state = states[s]
            out = run_step(dict(state, audio_hop=audio[None, k * hop:(k + 1) * hop]))
            state = {name: out[f"new_{name}"] for name in state}
            if position == hops_per_clip - 1:  # window complete: flush with the centred window's look-ahead
                flushed = state
                for _ in range(geometry.delay):
                    out = run_step(dict(flushed, audio_hop=tail))
                    flushed = {name: out[f"new_{name}"] for name in flushed}
                ends.append((k + 1) * hop)
                scores.append(np.asarray(out["scores"])[0])
                state = geometry.zero_state()
            states[s] = state
    order = np.argsort(ends)
    return np.asarray(ends)[order], np.asarray(scores).reshape(-1, len(scores[0]) if scores else 0)[order]


def smooth_scores(scores: np.ndarray, windows: int = SMOOTH_WINDOWS) -> np.ndarray:
    """Moving average over the last ``windows`` decisions (causal)."""
    if len(scores) == 0 or windows <= 1:
        return scores
    cumsum = np.cumsum(np.vstack([np.zeros((1, scores.shape[1])), scores]), axis=0)
    counts = np.minimum(np.arange(1, len(scores) + 1), windows)[:, None]
    return (cumsum[1:] - cumsum[np.maximum(0, np.arange(1, len(scores) + 1) - windows)]) / counts


def pick_detections(times_s: np.ndarray, smoothed: np.ndarray, labels: list[str], *, threshold: float,
                    refractory_s: float = REFRACTORY_S) -> list[Detection]:
    keyword_ids = [i for i, label in enumerate(labels) if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    detections, muted_until = [], -np.inf
    for t, row in zip(times_s, smoothed):
        best = max(keyword_ids, key=lambda i: row[i])
        if row[best] >= threshold and t >= muted_until:
            detections.append(Detection(time_s=float(t), label=labels[best], score=float(row[best])))
            muted_until = t + refractory_s
    return detections


def match_events(detections: list[Detection], events: list[dict], *, early_s: float = 0.5, late_s: float = 1.0
                 ) -> tuple[int, int]:
    """(hits, false alarms): a detection hits an unmatched keyword event of the same label whose span
    [start - early_s, end + late_s] contains the detection time; anything else is a false alarm."""
    used = [False] * len(events)
    hits = false_alarms = 0
    for det in detections:
        for i, ev in enumerate(events):
            if not used[i] and ev["label"] == det.label and ev["start_s"] - early_s <= det.time_s <= ev["end_s"] + late_s:
                used[i] = True
                hits += 1
                break
        else:
            false_alarms += 1
    return hits, false_alarms


def synth_long_stream(cfg, spec, *, minutes: float, seed: int) -> tuple[np.ndarray, list[dict]]:
    """A long recording from held-out test clips: keywords and unknown words every 2-4 s over
    background noise. Returns (audio [S], keyword events with label/start_s/end_s)."""
    from pipeline.features import load_clip
    from pipeline.prepare import read_rows

    rng = np.random.default_rng(seed)
    sr = spec.sample_rate
    rows = [r for r in read_rows(cfg.prepared_dir, "test") if r["label"] != SILENCE_LABEL]
    keyword_rows = [r for r in rows if r["label"] != UNKNOWN_LABEL]
    unknown_rows = [r for r in rows if r["label"] == UNKNOWN_LABEL]
    total = int(minutes * 60 * sr)
    noise_files = sorted((cfg.dataset_dir / "_background_noise_").glob("*.wav"))
    audio = np.zeros(total, np.float32)
    if noise_files:
        from pipeline.audio import load_audio

        noise = np.concatenate([load_audio(p, sample_rate=sr) for p in noise_files])
        audio += 0.1 * np.resize(noise, total)  # quiet, continuous background
    events, t = [], 1.0
    while t + 1.5 < total / sr:
        pool = unknown_rows if (unknown_rows and rng.random() < 0.3) else keyword_rows
        row = pool[int(rng.integers(len(pool)))]
        try:
            clip = load_clip(row, spec)
        except Exception:  # an unreadable test clip is left out of the stream
            t += 1.0
            continue
        start = int(t * sr)
        audio[start:start + len(clip)] += clip
        loud = np.flatnonzero(np.abs(clip) > 0.1 * np.abs(clip).max())
        if row["label"] != UNKNOWN_LABEL and loud.size:
            events.append({"label": row["label"], "start_s": (start + loud[0]) / sr, "end_s": (start + loud[-1]) / sr})
        t += 1.0 + rng.uniform(1.0, 3.0)
    return np.clip(audio, -1, 1), events


def long_audio_eval(cfg, run_dir: Path, manifest: dict, *, minutes: float) -> dict:
    """Recall and false alarms per hour of the streaming model on a synthesized long recording, over a
    threshold sweep; writes long_audio.json and det_curve.png; returns the summary for the manifest."""
    from pipeline.export import StreamGeometry
    from pipeline.feature_spec import FeatureSpec
    from pipeline.verify import TFLiteRunner

    spec = FeatureSpec.from_dict(manifest["feature_spec"])
    labels = manifest["labels"]
    audio, events = synth_long_stream(cfg, spec, minutes=minutes, seed=cfg.run.seed)
    runner = TFLiteRunner(run_dir / "model_streaming.tflite")
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    ends, scores = window_scores(runner, geometry, audio, clip_samples=spec.clip_samples)
    times = (ends - spec.clip_samples / 2) / spec.sample_rate
    smoothed = smooth_scores(scores)
    hours = len(audio) / spec.sample_rate / 3600
    sweep = []
    for threshold in np.round(np.concatenate([np.arange(0.30, 0.95, 0.05), np.arange(0.95, 1.0, 0.005)]), 3):
        hits, false_alarms = match_events(pick_detections(times, smoothed, labels, threshold=float(threshold)), events)
        sweep.append({"threshold": float(threshold), "recall": hits / max(1, len(events)),
                      "false_alarms": false_alarms, "false_alarms_per_hour": false_alarms / hours})
    ok = [p for p in sweep if p["false_alarms_per_hour"] <= 1.0]
    chosen = max(ok, key=lambda p: (p["recall"], -p["threshold"])) if ok else min(sweep, key=lambda p: p["false_alarms"])
    summary = {"minutes": minutes, "keywords": len(events), "streams": STREAMS, "smooth_windows": SMOOTH_WINDOWS,
               "refractory_s": REFRACTORY_S, "threshold": chosen["threshold"], "recall": round(chosen["recall"], 4),
               "false_alarms": chosen["false_alarms"], "false_alarms_per_hour": round(chosen["false_alarms_per_hour"], 3),
               "goal": "recall >= 0.95 at <= 1 false alarm per hour",
               "real_time_factor": round(runner.seconds / (len(audio) / spec.sample_rate), 5)}
    (run_dir / "long_audio.json").write_text(json.dumps({**summary, "sweep": sweep, "events": events}, indent=1))
    plot_det(sweep, run_dir / "det_curve.png", chosen)
    return summary


def plot_det(sweep: list[dict], path: Path, chosen: dict) -> None:
    """False-reject rate against false alarms per hour, one point per threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.evaluate import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.5))
    fa = [max(p["false_alarms_per_hour"], 0.1) for p in sweep]
    frr = [100 * (1 - p["recall"]) for p in sweep]
    ax.plot(fa, frr, "o-", ms=3)
    ax.plot([max(chosen["false_alarms_per_hour"], 0.1)], [100 * (1 - chosen["recall"])], "r*", ms=12,
            label=f"threshold {chosen['threshold']}: recall {chosen['recall']:.1%}")
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour (0 drawn at 0.1)")
    ax.set_ylabel("false rejects (%)")
    ax.set_title("DET curve: streaming model on a synthesized long recording")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    save_figure(fig, path, dpi=100)


def main(*, model: str, file: str, threshold: float | None = None, as_json: bool = False) -> int:
    from pipeline.audio import load_audio
    from pipeline.export import StreamGeometry
    from pipeline.predict import find_run_files
    from pipeline.verify import TFLiteRunner

    path = Path(model)
    if path.is_dir():
        path = path / "model_streaming.tflite"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no streaming model (model_streaming.tflite from an exports/<run>/ folder)")
    manifest, labels = find_run_files(path)
    from pipeline.feature_spec import FeatureSpec

    spec = FeatureSpec.from_dict(manifest["feature_spec"])
    runner = TFLiteRunner(path)
    if "audio_hop" not in runner.input_names:
        raise FileNotFoundError(f"{path}: not a streaming model (no audio_hop input)")
    if threshold is None:
        threshold = manifest.get("long_audio", {}).get("threshold", DEFAULT_THRESHOLD)
    audio = load_audio(file, sample_rate=spec.sample_rate)
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    ends, scores = window_scores(runner, geometry, audio, clip_samples=spec.clip_samples)
    times = (ends - spec.clip_samples / 2) / spec.sample_rate
    detections = pick_detections(times, smooth_scores(scores), labels, threshold=threshold)
    for det in detections:
        if as_json:
            print(json.dumps({"time_s": round(det.time_s, 2), "label": det.label, "score": round(det.score, 4)}))
        else:
            print(f"{det.time_s:9.2f} s  {det.label:10s} {det.score:.3f}")
    print(f"{len(detections)} detections in {len(audio) / spec.sample_rate:.1f} s of audio (threshold {threshold})",
          file=sys.stderr)
    return 0
