"""The frequency warp of scripts/warp_ensemble_probe.py (docs/always_on.md reads a test-time ensemble with it)."""
import importlib.util
from pathlib import Path

import numpy as np

from pipeline.feature_spec import FeatureSpec

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "warp_ensemble_probe.py"
spec = importlib.util.spec_from_file_location("warp_ensemble_probe", SCRIPT)
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

SPEC = FeatureSpec()


def test_no_warp_is_the_identity():
    np.testing.assert_allclose(probe.warp_matrix(SPEC, 1.0), np.eye(SPEC.n_mels), atol=1e-6)
    frames = np.random.default_rng(0).uniform(-60, 20, (5, SPEC.n_mels)).astype(np.float32)
    np.testing.assert_allclose(probe.warped(frames, probe.warp_matrix(SPEC, 1.0)), frames, atol=1e-4)


def test_a_longer_vocal_tract_moves_a_formant_down_and_a_shorter_one_up():
    frame = np.full((1, SPEC.n_mels), -60.0, np.float32)
    frame[0, 20] = 0.0  # one loud band in the middle
    peaks = {alpha: int(np.argmax(probe.warped(frame, probe.warp_matrix(SPEC, alpha))))
             for alpha in (0.8, 1.0, 1.2)}
    assert peaks[0.8] < peaks[1.0] == 20 < peaks[1.2]


def test_each_warped_band_is_a_weighted_mean_of_at_most_two_neighbours():
    for alpha in (0.85, 0.9, 1.1, 1.2):
        matrix = probe.warp_matrix(SPEC, alpha)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
        assert matrix.min() >= 0 and ((matrix > 0).sum(axis=1) <= 2).all()
