"""Where the features stage spends its time, per clip on one core: decode, log-mel (librosa batched, the
float32 path the stage uses, librosa one clip at a time), the float16 cast and pickling a batch's result
between processes. Medians over repeats, on the first clips of a prepared split.

    .venv/bin/python scripts/features_profile.py [--config F] [--set k=v] [--clips 1024]
"""
from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.dataset import load_clip, read_rows  # noqa: E402
from pipeline.feature_spec import FeatureSpec, librosa_logmel, logmel  # noqa: E402


def per_clip_ms(fn, clips: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)) / clips


def main() -> int:
    from threadpoolctl import threadpool_limits

    import librosa

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None)
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--clips", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    threadpool_limits(limits=1)  # one core, as each feature worker runs
    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    rows = read_rows(cfg.prepared_dir, "train")[:args.clips]
    n, b = len(rows), args.batch
    audio = np.stack([load_clip(r, spec) for r in rows])
    feats = logmel(audio, spec)

    def batched(fn):
        return lambda: [fn(audio[i:i + b], spec) for i in range(0, n, b)]

    def plain():
        for clip in audio:
            mel = librosa.feature.melspectrogram(y=clip, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
                                                 win_length=spec.win_length, center=True, pad_mode="constant",
                                                 n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
            10 * np.log10(np.maximum(mel, 1e-10))

    half = feats.astype(np.float16)
    rows_ms = {
        "decode (soundfile, 1-s window of each row)": per_clip_ms(lambda: [load_clip(r, spec) for r in rows], n, args.repeats),
        f"log-mel, librosa, batches of {b}": per_clip_ms(batched(librosa_logmel), n, args.repeats),
        f"log-mel, float32 path (the stage), batches of {b}": per_clip_ms(batched(logmel), n, args.repeats),
        "log-mel, librosa one clip at a time (bench's baseline)": per_clip_ms(plain, n, args.repeats),
        "float16 cast": per_clip_ms(lambda: feats.astype(np.float16), n, args.repeats),
        "pickle + unpickle the float16 result": per_clip_ms(lambda: pickle.loads(pickle.dumps(half)), n, args.repeats),
    }
    print(f"{n} clips of {cfg.prepared_dir.name}, one core, ms per clip (median of {args.repeats}):")
    for name, ms in rows_ms.items():
        print(f"  {ms:7.3f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
