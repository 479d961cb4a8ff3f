"""Why a run's always-on benchmark misses commands: for every command of a recording, the best score of
its word in the windows that could hit it ([start - 0.5 s, end + 1 s], as verify matches), grouped by how
loud the word is over the noise floor of its 30-s block (the recording's SNR is drawn per block). It reads
the 1-s model's windows (the staggered design's scores, model.keras), whichever design the run ships.

Usage (from the repo root; the run's config, with the same --set as the run):
    .venv/bin/python scripts/always_on_misses.py --run exports/demo [--split test] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.feature_spec import FeatureSpec  # noqa: E402

LEVEL_BINS_DB = ((-np.inf, 15.0), (15.0, 22.0), (22.0, 30.0), (30.0, np.inf))


def level_over_floor_db(audio: np.ndarray, event: dict, sample_rate: int, block_s: float) -> float:
    """The word's RMS over the block's noise floor (5th percentile of 25-ms frame RMS), in dB."""
    frame = int(0.025 * sample_rate)
    block = int(block_s * sample_rate)
    first = int(event["start_s"] * sample_rate) // block * block
    rms = np.sqrt(np.mean(audio[first:first + block][: block // frame * frame].reshape(-1, frame) ** 2, axis=1) + 1e-12)
    word = audio[int(event["start_s"] * sample_rate):int(event["end_s"] * sample_rate)]
    return float(20 * np.log10(np.sqrt(np.mean(word ** 2) + 1e-12) / np.percentile(rms, 5)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run's export folder (model.keras, manifest.json)")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, as for ./run")
    ap.add_argument("--split", default="test", choices=("validation", "test"))
    args = ap.parse_args()
    run = Path(args.run)
    for need in ("model.keras", "manifest.json"):
        if not (run / need).is_file():
            sys.exit(f"always_on_misses: {run / need} not found: --run takes a finished run's export folder")

    import keras

    from pipeline.edge.detection import window_time_s
    from pipeline.long_audio import NOISE_BLOCK_S, recordings
    from pipeline.stages.verify import window_scores

    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    if not all((cfg.long_audio_dir / f"{split}.json").is_file() for split in ("validation", "test")):
        sys.exit(f"always_on_misses: no always-on recordings in {cfg.long_audio_dir}: give the run's config and --set "
                 "(paths.data among them), and let its verify stage finish first")
    manifest = json.loads((run / "manifest.json").read_text())
    labels, stride = manifest["labels"], manifest["detection"]["stride_samples"]
    audio, events, _ = recordings(cfg, spec)[args.split]
    ends, scores = window_scores(keras.models.load_model(run / "model.keras"), spec, audio,
                                 window_samples=spec.clip_samples, stride_samples=stride, hop=spec.hop_length)
    times = window_time_s(ends, spec.clip_samples, spec.sample_rate)
    rows = []
    for ev in events:
        near = (times >= ev["start_s"] - 0.5) & (times <= ev["end_s"] + 1.0)
        best = float(scores[near, labels.index(ev["label"])].max()) if near.any() else 0.0
        rows.append((ev["kind"], ev["label"], best, level_over_floor_db(audio, ev, spec.sample_rate, NOISE_BLOCK_S)))
    print(f"{args.split} recording, {len(events)} commands: best raw window score of the command's word near it")
    for kind in ("alone", "phrase"):
        best = np.array([r[2] for r in rows if r[0] == kind])
        level = np.array([r[3] for r in rows if r[0] == kind])
        print(f"said {kind} ({len(best)}): >= 0.3 {np.mean(best >= 0.3):.0%}, >= 0.9 {np.mean(best >= 0.9):.0%}, "
              f">= 0.97 {np.mean(best >= 0.97):.0%}")
        for lo, hi in LEVEL_BINS_DB:
            inside = (level >= lo) & (level < hi)
            if inside.any():
                print(f"  word {lo:>5.0f} to {hi:<4.0f} dB over the noise floor: {inside.sum():3d} commands, "
                      f">= 0.9 {np.mean(best[inside] >= 0.9):.0%}, >= 0.97 {np.mean(best[inside] >= 0.97):.0%}")
        print("  under 0.9, by word:", dict(Counter(r[1] for r in rows if r[0] == kind and r[2] < 0.9).most_common()))


if __name__ == "__main__":
    main()
