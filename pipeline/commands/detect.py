"""./run detect MODEL LONG_FILE [--threshold T] [--json]: time-stamped keyword detections.

Runs the edge runtime's detection algorithm (pipeline/edge/detection.py) with the parameters in the
run's manifest.json (``detection``), on a file of any length: it is read in 10-s blocks, and each
detection is printed as soon as it is found. MODEL is a run folder (its ``detection.model``: the
continuous design's model_continuous.tflite when the run trained it), a streaming .tflite of the run,
or a split int8 network (paired with its float frontend): model_continuous_int8.tflite runs the continuous
design, the 1-s models (model_streaming.tflite, model_streaming_int8.tflite) the staggered one.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline.audio import audio_blocks
from pipeline.edge.detection import DESIGN_MODELS, DetectionParams, Detector
from pipeline.edge.run_folder import RunFolder


def main(*, model: str, file: str, threshold: float | None = None, as_json: bool = False) -> int:
    path = Path(model)
    run = RunFolder.of(path)
    params = DetectionParams.from_manifest(run.manifest)
    if threshold is not None:
        params = replace(params, threshold=threshold)
    elif not run.verified:
        print(f"note: {run.path} has no manifest.json (verify has not run), so the threshold is the untuned default "
              f"{params.threshold}: run ./run verify, or give --threshold", file=sys.stderr)
    if path.resolve() == run.path.resolve():  # a run folder: its own detector (another folder is no model)
        path = run.path / run.manifest.get("detection", {}).get("model", DESIGN_MODELS[params.design])
    art = run.artifact(path)
    step = run.streaming_step(art)
    design = "continuous" if art["variant"].startswith("continuous") else "staggered"  # what this model was trained for
    if design != params.design:
        if threshold is None:
            print(f"note: {art['path']} runs the {design} design; the run's threshold {params.threshold} was tuned "
                  f"for its {params.design} design (give --threshold)", file=sys.stderr)
        params = replace(params, design=design)
    spec = run.feature_spec
    detector = Detector(step, run.geometry, run.labels, params, window_samples=spec["clip_samples"],
                        sample_rate=spec["sample_rate"])
    t0, samples, count = time.perf_counter(), 0, 0
    for block in audio_blocks(file, sample_rate=spec["sample_rate"]):
        samples += len(block)
        for det in detector.feed(block):
            count += 1
            if as_json:
                print(json.dumps({"time_s": round(det.time_s, 2), "label": det.label, "score": round(det.score, 4)}),
                      flush=True)
            else:
                print(f"{det.time_s:9.2f} s  {det.label:10s} {det.score:.3f}", flush=True)
    seconds = time.perf_counter() - t0
    audio_s = samples / spec["sample_rate"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{count} detections in {audio_s:.1f} s of audio (threshold {params.threshold}); "
          f"real-time factor {seconds / max(audio_s, 1e-9):.3f} ({seconds:.1f} s on 1 thread), "
          f"peak memory {peak_mb:.0f} MB", file=sys.stderr)
    return 0
