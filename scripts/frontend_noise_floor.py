"""How close the in-graph frontend comes to librosa, and how far real bugs land: the figures behind
verify's frontend gate (docs/frontend.md).

    .venv/bin/python scripts/frontend_noise_floor.py [--clips 300] [--data DIR]

Takes clips from a synthesized dataset folder (data/synth_*) when there is one, else synthetic
speech-like clips, and prints, for each variant, the max mel-power error relative to the frame's peak
(the gated figure), its 99.9th percentile, and the max dB difference overall and within 60 dB of the
frame peak.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import frontend  # noqa: E402
from pipeline.audio import fit_length, load_audio  # noqa: E402
from pipeline.feature_spec import FeatureSpec, librosa_logmel  # noqa: E402
from pipeline.stages.verify import FRONTEND_POWER_TOLERANCE  # noqa: E402


def clips(count: int, data: Path | None) -> np.ndarray:
    files = sorted(data.glob("*/*.wav")) if data else []
    files = [f for f in files if f.parent.name != "_background_noise_"]
    if files:
        picked = files[:: max(1, len(files) // count)][:count]
        return np.stack([fit_length(load_audio(f, sample_rate=16000), 16000) for f in picked])
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    out = []
    for _ in range(count):
        tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1) for k, f in enumerate(rng.uniform(100, 3000, 6)))
        out.append(0.3 * tone * np.exp(-((t - rng.uniform(0.3, 0.7)) ** 2) / 0.02) + 0.01 * rng.standard_normal(16000))
    return np.asarray(out, np.float32)


def main() -> None:
    import librosa
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--data", type=Path, default=next(iter(sorted(Path("data").glob("synth_*[!a-z]"))), None))
    args = parser.parse_args()
    spec = FeatureSpec()
    audio = clips(args.clips, args.data if args.data and args.data.is_dir() else None)
    reference = librosa_logmel(audio, spec)
    print(f"{len(audio)} clips from {args.data or 'synthetic speech-like signals'}; gate: power error <= "
          f"{FRONTEND_POWER_TOLERANCE}")
    print(f"{'variant':34s} {'power err max':>13s} {'p99.9':>9s} {'max dB':>9s} {'dB <60dB':>9s}")

    def row(name: str, got: np.ndarray) -> None:
        err = frontend.power_error(got, reference)
        diff = np.abs(got - reference)
        in_range = reference >= reference.max(-1, keepdims=True) - 60
        print(f"{name:34s} {err.max():13.2e} {np.percentile(err, 99.9):9.2e} {diff.max():9.2e} {diff[in_range].max():9.2e}")

    mel64 = librosa.feature.melspectrogram(y=audio.astype(np.float64), sr=spec.sample_rate, n_fft=spec.n_fft,
                                           hop_length=spec.hop_length, win_length=spec.win_length, center=True,
                                           pad_mode="constant", n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
    row("librosa in float64 (reference noise)", np.swapaxes(10 * np.log10(np.maximum(mel64, 1e-10)), -1, -2))
    row("frontend.clip_logmel (TF, float32)", frontend.clip_logmel(tf.constant(audio), spec).numpy())

    def hann_tf(length, dtype=tf.float32):
        return tf.signal.hann_window(length, dtype=dtype)

    left, right = frontend.frame_padding(spec)
    stft = tf.signal.stft(tf.pad(audio, [[0, 0], [left, right]]), frame_length=spec.win_length,
                          frame_step=spec.hop_length, fft_length=spec.n_fft, window_fn=hann_tf, pad_end=False)
    mel = tf.matmul(tf.abs(stft) ** 2, tf.constant(spec.mel_basis().T, tf.float32)).numpy()
    row("tf.signal.stft + TF's float32 window", 10 * np.log10(np.maximum(mel, 1e-10)))

    breaks = {
        "bug: symmetric Hann window": ("analysis_window", lambda s: np.hanning(s.win_length).astype(np.float32)),
        "bug: padding one sample off": ("frame_padding", lambda s: (left + 1, right - 1)),
        "bug: frames one hop late": ("frame_padding", lambda s: (left - s.hop_length, right + s.n_fft)),
    }
    for name, (attribute, broken) in breaks.items():
        original = getattr(frontend, attribute)
        setattr(frontend, attribute, broken)
        row(name, frontend.clip_logmel(tf.constant(audio), spec).numpy())
        setattr(frontend, attribute, original)
    original = FeatureSpec.mel_basis
    FeatureSpec.mel_basis = lambda s: librosa.filters.mel(sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels,
                                                          fmin=s.fmin, fmax=s.fmax, htk=True)
    row("bug: HTK mel scale", frontend.clip_logmel(tf.constant(audio), spec).numpy())
    FeatureSpec.mel_basis = original


if __name__ == "__main__":
    main()
