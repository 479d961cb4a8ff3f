"""Does a test-time ensemble over frequency warps of the input move the always-on curve?

Ensembles of differently trained models are the one lever that moved the continuous detector's whole curve
(docs/always_on.md, "Two towers folded into one network"), and their cost is training time. This probe asks
whether one trained model, fed its log-mel and copies of it warped along the frequency axis (a vocal-tract
length change of ``alpha``, as VTLP does in the 1-s training), and its frame scores averaged, gains part of
that for no training at all. It scores the run's continuous Keras model through one never-reset state per
recording, as verify does, once per warp; then for each combination of warps it averages the frame scores,
replays the detector (decisions every stride, smoothing, one detection per rise), lets the verify stage's
validation recordings pick the threshold (best recall at <= 1 false alarm an hour), and reports the held-out
hours given on the command line at that pick and at fixed thresholds.

The warp acts on mel power: band m of the warped frame takes the power the frame has at frequency
f_m / alpha, interpolated between the band centres (the top and bottom bands clamp). As a fixed matrix on
mel power, it could sit in-graph in front of the GRUs, so a phone would run exactly what this measures.

Usage (from the repo root, after ./run demo and scripts/quiet_hour.py make ...):
    .venv/bin/python scripts/warp_ensemble_probe.py --run exports/demo --hours test=H1,H2,H3 accents=H4,H5,H6 \
        [--alphas 1.0 0.9 1.1]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.feature_spec import LOG_FLOOR, FeatureSpec  # noqa: E402

FIXED_THRESHOLDS = (0.4, 0.5, 0.6, 0.7)


def warp_matrix(spec: FeatureSpec, alpha: float) -> np.ndarray:
    """[n_mels, n_mels]: warped mel power = power @ matrix.T; row m interpolates the power at f_m / alpha."""
    import librosa

    centres = librosa.mel_frequencies(spec.n_mels + 2, fmin=spec.fmin, fmax=spec.fmax)[1:-1]
    mel_centres = librosa.hz_to_mel(centres)
    wanted = np.clip(librosa.hz_to_mel(centres / alpha), mel_centres[0], mel_centres[-1])
    matrix = np.zeros((spec.n_mels, spec.n_mels), np.float32)
    for m, at in enumerate(wanted):
        upper = min(int(np.searchsorted(mel_centres, at, side="right")), spec.n_mels - 1)
        lower = max(upper - 1, 0)
        span = mel_centres[upper] - mel_centres[lower]
        share = 0.0 if span == 0 else (at - mel_centres[lower]) / span
        matrix[m, lower] += 1.0 - share
        matrix[m, upper] += share
    return matrix


def warped(frames: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Log-mel frames (dB) [..., n_mels] warped by ``warp_matrix``'s matrix, in dB again."""
    power = np.power(10.0, frames / 10.0)
    return (10.0 * np.log10(np.maximum(power @ matrix.T, LOG_FLOOR))).astype(np.float32)


def main() -> None:
    import keras

    from pipeline.audio import load_audio
    from pipeline.continuous import continuous_scores, sequence_model
    from pipeline.edge.detection import DetectionParams
    from pipeline.edge.runtime import StreamGeometry
    from pipeline.long_audio import recordings, validation_names
    from pipeline.stages.verify import continuous_windows, join_recordings, pick, point_at, sweep

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run's export folder with model_continuous.keras")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, as for ./run")
    ap.add_argument("--hours", nargs="+", required=True, help="GROUP=HOUR[,HOUR...] (scripts/quiet_hour.py make)")
    ap.add_argument("--alphas", nargs="+", type=float, default=[1.0, 0.9, 1.1])
    ap.add_argument("--out", help="save every warp's frame scores here (.npz) and reuse them")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    run = Path(args.run)
    if not (run / "model_continuous.keras").is_file() or not (run / "manifest.json").is_file():
        sys.exit(f"warp_ensemble_probe: {run} has no model_continuous.keras and manifest.json: run ./run demo first")
    manifest = json.loads((run / "manifest.json").read_text())
    labels = manifest["labels"]
    params = DetectionParams.from_manifest(manifest)
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    stride_hops = manifest["detection"]["stride_samples"] // spec.hop_length

    made = {name: (audio, events) for name, (audio, events, _) in
            recordings(cfg, spec, names=validation_names(cfg)).items()}
    groups: dict[str, list[str]] = {}
    for item in args.hours:
        group, _, paths = item.partition("=")
        if not paths:
            sys.exit(f"warp_ensemble_probe: --hours {item!r}: give GROUP=HOUR[,HOUR...]")
        for path in paths.split(","):
            hour = Path(path)
            if not (hour.with_suffix(".wav").is_file() and hour.with_suffix(".json").is_file()):
                sys.exit(f"warp_ensemble_probe: no {hour}.wav and .json (scripts/quiet_hour.py make --out {hour})")
            name = f"{group}:{hour.stem}"
            made[name] = (load_audio(str(hour.with_suffix(".wav")), sample_rate=spec.sample_rate),
                          json.loads(hour.with_suffix(".json").read_text())["events"])
            groups.setdefault(group, []).append(name)
    groups = {"validation": validation_names(cfg), **groups}

    cache = Path(args.out) if args.out else None
    # cached scores are named by what they depend on: the model's bytes and the recordings (names and lengths)
    key = hashlib.sha1((run / "model_continuous.keras").read_bytes())
    key.update(repr([(name, len(audio)) for name, (audio, _) in made.items()]).encode())
    scores: dict[float, dict[str, np.ndarray]] = {}
    model = None
    for alpha in args.alphas:
        saved = cache / f"scores_{key.hexdigest()[:10]}_alpha{alpha:g}.npz" if cache else None
        if saved and saved.is_file():
            scores[alpha] = dict(np.load(saved))
            continue
        if model is None:
            model = sequence_model(keras.models.load_model(run / "model_continuous.keras", compile=False),
                                   stateful_batch=len(made))
        transform = None if alpha == 1.0 else functools.partial(warped, matrix=warp_matrix(spec, alpha))
        scores[alpha] = dict(zip(made, continuous_scores(model, [audio for audio, _ in made.values()], spec,
                                                         transform=transform)))
        print(f"alpha {alpha:g}: scored {len(made)} recordings", flush=True)
        if saved:  # written whole, then renamed: a cut-off run leaves no half file under the final name
            saved.parent.mkdir(parents=True, exist_ok=True)
            partial = saved.with_suffix(".partial.npz")
            np.savez(partial, **scores[alpha])
            partial.replace(saved)

    for size in range(1, len(args.alphas) + 1):
        for combo in itertools.combinations(args.alphas, size):
            curves = {}
            for group, names in groups.items():
                parts = []
                for name in names:
                    audio, events = made[name]
                    mean = np.mean([scores[a][name] for a in combo], axis=0)
                    times, smoothed = continuous_windows(mean, samples=len(audio), spec=spec, stride_hops=stride_hops,
                                                         delay=geometry.delay, smooth_windows=params.smooth_windows)
                    parts.append((times, smoothed, events, len(audio) / spec.sample_rate, {}))
                times, smoothed, events, seconds, _ = join_recordings(parts)
                curves[group] = sweep(times, smoothed, events, labels, hours=seconds / 3600, params=params)
            chosen = pick(curves["validation"])
            line = [f"alphas {'+'.join(f'{a:g}' for a in combo):14s} pick {chosen['threshold']:.3f}: validation "
                    f"{chosen['recall']:.1%} ({chosen['false_alarms']})"]
            for group in groups:
                if group == "validation":
                    continue
                at = point_at(curves[group], chosen["threshold"])
                fixed = " / ".join(f"{(p := point_at(curves[group], t))['recall']:.1%} {p['false_alarms']}"
                                   for t in FIXED_THRESHOLDS)
                line.append(f"{group} {at['recall']:.1%} ({at['hits']}, {at['false_alarms']}) "
                            f"[at {'/'.join(f'{t:g}' for t in FIXED_THRESHOLDS)}: {fixed}]")
            print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
