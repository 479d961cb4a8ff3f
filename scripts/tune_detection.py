"""Smoothing and decision stride of the continuous detector, chosen on the validation recording.

The continuous model gives a keyword's label for LABEL_S (0.6 s; 0.4 s when this was measured) after the
word ends, so decisions every 200 ms read only two or three frames of it, and a moving average over three
decisions dilutes that peak. This script scores a finished run's continuous model once per recording (the
verify stage's cached recordings), then replays steps 3-4 of the detection algorithm for each (stride,
smoothing) pair: the validation recordings pick the threshold (best recall at <= 1 false alarm per hour,
as verify), and the test recording gives the figures. Pick a pair on the validation column only.

Usage (from the repo root, after ./run demo):
    .venv/bin/python scripts/tune_detection.py --run exports/demo [--set paths.data=...]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.feature_spec import FeatureSpec  # noqa: E402


def main() -> None:
    import keras

    from pipeline.continuous import continuous_scores, sequence_model
    from pipeline.edge.detection import DetectionParams
    from pipeline.edge.runtime import StreamGeometry
    from pipeline.long_audio import recording_names, recordings
    from pipeline.stages.verify import choose_threshold, continuous_windows, join_recordings, sweep

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run's export folder with model_continuous.keras")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, as for ./run")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    run = Path(args.run)
    manifest = json.loads((run / "manifest.json").read_text())
    labels = manifest["labels"]
    delay = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"]).delay  # hops until a frame completes
    made = recordings(cfg, spec)
    model = sequence_model(keras.models.load_model(run / "model_continuous.keras", compile=False),
                           stateful_batch=len(made))
    scored = continuous_scores(model, [audio for audio, _, _ in made.values()], spec)
    frames = {name: (scores, events, len(audio), len(audio) / spec.sample_rate)
              for (name, (audio, events, _)), scores in zip(made.items(), scored)}
    params = DetectionParams.from_manifest(manifest)
    rows = []
    for stride in (5, 10, 20):
        for smooth in (1, 2, 3, 4, 6):
            parts = {"validation": [], "test": []}  # as verify: the validation recordings count as one
            for name, split, _ in recording_names(cfg):
                if split == "test" and name != "test":
                    continue  # the quiet test recording is reported apart by verify; the figures here are the test one's
                scores, events, samples, seconds = frames[name]
                times, smoothed = continuous_windows(scores, samples=samples, spec=spec, stride_hops=stride,
                                                     delay=delay, smooth_windows=smooth)
                parts[split].append((times, smoothed, events, seconds, {}))
            curves = {}
            for split, of_split in parts.items():
                times, smoothed, events, seconds, _ = join_recordings(of_split)
                curves[split] = sweep(times, smoothed, events, labels, hours=seconds / 3600,
                                      params=replace(params, smooth_windows=smooth))
            val, test = choose_threshold(curves)
            rows.append((stride, smooth, val, test))
            hop_ms = 1000 * spec.hop_length // spec.sample_rate  # 10 ms when the docs' table was measured, 20 in the demo now
            print(f"stride {stride * hop_ms:3d} ms, smoothing {smooth} ({stride * smooth * hop_ms} ms): threshold {val['threshold']:.3f}; "
                  f"validation {val['recall']:.1%} ({val['hits']}), {val['false_alarms']} FA; "
                  f"test {test['recall']:.1%} ({test['hits']}), {test['false_alarms']} FA, alone {test['recall_alone']:.1%}",
                  flush=True)


if __name__ == "__main__":
    main()
