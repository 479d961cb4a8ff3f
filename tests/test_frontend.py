"""The in-graph frontend (pipeline/frontend.py) against librosa, and verify's gate on it: a correct
frontend passes with margin, and each kind of real frontend bug fails it."""
import librosa
import numpy as np
import pytest
import tensorflow as tf

from pipeline import frontend
from pipeline.feature_spec import FeatureSpec, librosa_logmel
from pipeline.stages.verify import FRONTEND_POWER_TOLERANCE, frontend_diff, frontend_failures
from test_features import speechlike

SPEC = FeatureSpec()
AUDIO = np.stack([speechlike(seed) for seed in range(4)])


def gate(got: np.ndarray) -> list[str]:
    return frontend_failures("frontend", frontend_diff(got, librosa_logmel(AUDIO, SPEC)))


def test_window_is_librosas_periodic_hann():
    np.testing.assert_allclose(frontend.analysis_window(SPEC), librosa.filters.get_window("hann", SPEC.win_length),
                               rtol=0, atol=1e-7)


def test_clip_logmel_matches_librosa_far_inside_the_gate():
    got = frontend.clip_logmel(tf.constant(AUDIO), SPEC).numpy()
    assert got.shape == (4, *SPEC.shape)
    checks = frontend_diff(got, librosa_logmel(AUDIO, SPEC))
    assert checks["logmel_power_error"] < FRONTEND_POWER_TOLERANCE / 10  # measured ~5e-6: a 20x margin
    assert gate(got) == []


def test_streaming_frame_is_the_clip_frame():
    """The frame the streaming frontend computes per hop (context[:win_length]) is the clip's frame t."""
    clip = frontend.clip_logmel(tf.constant(AUDIO[:1]), SPEC).numpy()[0]
    left, _ = frontend.frame_padding(SPEC)
    padded = np.pad(AUDIO[0], (left, SPEC.n_fft))
    for t in (0, 1, 50, 100):
        frame = padded[None, t * SPEC.hop_length:t * SPEC.hop_length + SPEC.win_length]
        np.testing.assert_allclose(frontend.frames_logmel(tf.constant(frame), SPEC).numpy()[0], clip[t], atol=1e-5)


BREAKS = {
    "window": ("analysis_window", lambda spec: np.hanning(spec.win_length).astype(np.float32)),  # symmetric Hann
    "padding": ("frame_padding", lambda spec: (spec.n_fft // 2 - (spec.n_fft - spec.win_length) // 2 + 1,
                                               spec.n_fft // 2 + (spec.n_fft - spec.win_length) // 2 - 1)),
    "frame_off_by_one": ("frame_padding", lambda spec: (spec.n_fft // 2 - (spec.n_fft - spec.win_length) // 2
                                                        - spec.hop_length, spec.n_fft // 2 + spec.n_fft)),
}


@pytest.mark.parametrize("name", BREAKS)
def test_a_broken_frontend_fails_the_gate(monkeypatch, name):
    attribute, broken = BREAKS[name]
    monkeypatch.setattr(frontend, attribute, broken)
    assert gate(frontend.clip_logmel(tf.constant(AUDIO), SPEC).numpy())


def test_a_wrong_mel_basis_fails_the_gate(monkeypatch):
    htk = librosa.filters.mel(sr=SPEC.sample_rate, n_fft=SPEC.n_fft, n_mels=SPEC.n_mels, fmin=SPEC.fmin, fmax=SPEC.fmax,
                              htk=True)  # the HTK mel scale, as TF's linear_to_mel_weight_matrix uses
    monkeypatch.setattr(FeatureSpec, "mel_basis", lambda self: htk)
    assert gate(frontend.clip_logmel(tf.constant(AUDIO), SPEC).numpy())
