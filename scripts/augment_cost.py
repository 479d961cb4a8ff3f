"""Cost of each waveform augmentation (pipeline/augment.py) per 1-s clip on one core, in ms.

    .venv/bin/python scripts/augment_cost.py [--clips 300]

Each augmentation runs alone (probability 1, its default range) on generated speech-like 1-s clips at
16 kHz, then all of them together; prints the median and the 90th percentile of the per-clip times.
One BLAS/FFT thread, as in a features worker process. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.augment import AugmentParams, augment

SR = 16000
NAMES = ["speed", "vtlp", "tilt", "reverb", "noise", "gain"]


def speechlike(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(SR) / SR
    f0 = rng.uniform(90, 250)
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20) if f0 * k < 7000)
    envelope = np.exp(-((t - rng.uniform(0.3, 0.7)) ** 2) / 0.02)
    return (0.2 * tone * envelope + 1e-3 * rng.standard_normal(SR)).astype(np.float32)


def per_clip_ms(params: AugmentParams, clips: list[np.ndarray], noise: list[np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(0)
    augment(clips[0], rng=rng, params=params, noise=noise, sample_rate=SR)  # warm-up (imports, caches)
    times = []
    for clip in clips:
        start = time.perf_counter()
        augment(clip, rng=rng, params=params, noise=noise, sample_rate=SR)
        times.append(time.perf_counter() - start)
    return np.array(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    clips = [speechlike(rng) for _ in range(args.clips)]
    noise = [(0.05 * rng.standard_normal(30 * SR)).astype(np.float32)]
    settings = {name: AugmentParams(**{f"{name}_probability": 1.0}) for name in NAMES}
    settings["all"] = AugmentParams(**{f"{name}_probability": 1.0 for name in NAMES})
    print(f"{'augmentation':14s} {'median ms':>9s} {'p90 ms':>7s}   ({args.clips} 1-s clips at {SR} Hz, one thread)")
    with threadpool_limits(limits=1):
        for name, params in settings.items():
            ms = per_clip_ms(params, clips, noise)
            print(f"{name:14s} {np.median(ms):9.2f} {np.percentile(ms, 90):7.2f}")


if __name__ == "__main__":
    main()
