"""The in-graph log-mel frontend: the FeatureSpec's librosa log-mel in TensorFlow ops that TFLite runs
as builtins (RFFT2D, BATCH_MATMUL, ...). One function, ``frames_logmel``, turns audio frames into
log-mel rows; the 1-s audio model applies it to every frame of a clip (``clip_logmel``), the streaming
frontend to the one frame each hop completes. The derivation, and how close it comes to librosa, are
in docs/frontend.md.

Why framing win_length samples equals librosa: librosa centres a win_length Hann window inside each
n_fft frame (zeros around it). Multiplying win_length samples by the window and zero-padding them to
n_fft on the right is the same windowed signal, circularly shifted, so the power spectrum is equal. To
keep librosa's frame centres (``center=True``: frame t is centred on sample t*hop), the signal is padded
with n_fft//2 - (n_fft - win_length)//2 zeros on the left.
"""
from __future__ import annotations

import numpy as np

from pipeline.feature_spec import LOG_FLOOR, FeatureSpec


def analysis_window(spec: FeatureSpec) -> np.ndarray:
    """librosa's periodic Hann window of win_length samples, computed once in float64, then float32.

    (TF's own ``hann_window`` computes the cosine in float32: its error, ~1e-7 per tap, showed up as
    1e-3 dB in quiet bins.)
    """
    n = np.arange(spec.win_length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / spec.win_length)).astype(np.float32)


def frame_padding(spec: FeatureSpec) -> tuple[int, int]:
    """Zeros added (left, right) to a clip so that frame t starts at sample t*hop of the padded clip."""
    offset = (spec.n_fft - spec.win_length) // 2
    return spec.n_fft // 2 - offset, spec.n_fft // 2 + offset


def frames_logmel(frames, spec: FeatureSpec):
    """Audio frames [..., win_length] (float32) -> log-mel [..., n_mels], in dB with the absolute floor."""
    import tensorflow as tf

    spectrum = tf.signal.rfft(frames * tf.constant(analysis_window(spec)), fft_length=[spec.n_fft])
    power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
    mel = tf.matmul(power, tf.constant(spec.mel_basis().T, tf.float32))
    return 10.0 * tf.math.log(tf.maximum(mel, LOG_FLOOR)) / np.float32(np.log(10.0))


def clip_logmel(audio, spec: FeatureSpec):
    """Clips [B, clip_samples] -> log-mel [B, num_frames, n_mels], equal to ``feature_spec.logmel``."""
    import tensorflow as tf

    left, right = frame_padding(spec)
    padded = tf.pad(audio, [[0, 0], [left, right]])
    frames = tf.signal.frame(padded, frame_length=spec.win_length, frame_step=spec.hop_length)
    return frames_logmel(frames[:, :spec.num_frames], spec)


def power_error(got_db: np.ndarray, reference_db: np.ndarray) -> np.ndarray:
    """Per-frame mel-power error relative to the frame's peak: max over bins of
    |10^(got/10) - 10^(ref/10)| / 10^(peak/10), shape [..., T]. Float32 round-off in an FFT is about a
    fixed fraction of the frame's energy in every bin, so this figure has the same noise floor in loud
    and quiet bins, while a dB difference blows up in quiet ones (docs/frontend.md)."""
    ref = np.asarray(reference_db, np.float64)
    peak = 10.0 ** (ref.max(axis=-1, keepdims=True) / 10.0)
    diff = np.abs(10.0 ** (np.asarray(got_db, np.float64) / 10.0) - 10.0 ** (ref / 10.0))
    return (diff / peak).max(axis=-1)
