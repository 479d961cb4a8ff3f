"""pipeline/mel_augment.py: the log-mel voice warp moves a tone's band as a tone at alpha x the frequency
would sit, the EQ stays within its reach and is smooth, both are off at probability 0, and the keys re-run
train, not features."""
import numpy as np
import pytest
import tensorflow as tf

from pipeline.config import ConfigError, load_config
from pipeline.feature_spec import FeatureSpec, logmel
from pipeline.mel_augment import MelAugment, blur_matrices, eq_basis, mixup, warp_matrices

SR = 16000
SPEC = FeatureSpec(sample_rate=SR, clip_samples=SR, n_fft=512, win_length=400, hop_length=320, n_mels=40,
                   fmin=20.0, fmax=7600.0)


def tone(freq: float) -> np.ndarray:
    t = np.arange(SR) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def augmenter(**kw) -> MelAugment:
    args = dict(n_mels=SPEC.n_mels, fmin=SPEC.fmin, fmax=SPEC.fmax, warp_probability=0.0, warp_alpha=(0.85, 1.15),
                eq_probability=0.0, eq_db=6.0, eq_terms=4, blur_probability=0.0, blur_bands=1.5)
    return MelAugment(**{**args, **kw})


def test_alpha_one_is_the_identity():
    x = logmel(tone(700.0)[None], SPEC)[0]
    (identity,) = warp_matrices(SPEC.n_mels, SPEC.fmin, SPEC.fmax, (1.0, 1.0), steps=1)
    np.testing.assert_allclose(x @ identity, x, atol=1e-4)


@pytest.mark.parametrize("alpha", [0.85, 1.15])
def test_warp_puts_a_tone_where_a_tone_at_alpha_times_the_frequency_lies(alpha):
    freq = 1200.0
    (warp,) = warp_matrices(SPEC.n_mels, SPEC.fmin, SPEC.fmax, (alpha, alpha), steps=1)
    warped = (logmel(tone(freq)[None], SPEC)[0] @ warp).mean(axis=0)
    target = logmel(tone(alpha * freq)[None], SPEC)[0].mean(axis=0)
    original = logmel(tone(freq)[None], SPEC)[0].mean(axis=0)
    assert np.argmax(warped) == np.argmax(target) != np.argmax(original)


def test_eq_stays_within_its_reach_and_is_smooth():
    x = tf.zeros([256, 51, SPEC.n_mels])
    out = augmenter(eq_probability=1.0, eq_db=6.0)(x).numpy()
    assert np.abs(out).max() <= 6.0 + 1e-4
    assert np.abs(out).max() > 3.0  # it reaches far in some examples
    assert np.ptp(out, axis=1).max() < 1e-5  # one curve for every frame of an example
    # slow curves: neighbouring bands differ by a small share of the reach (4 cosines over 40 bands)
    assert np.abs(np.diff(out[:, 0], axis=1)).max() < 6.0 * np.pi * 4 / SPEC.n_mels
    assert len(eq_basis(SPEC.n_mels, 4)) == 4


def test_more_eq_terms_give_finer_curves():
    x = tf.zeros([512, 2, SPEC.n_mels])
    def turns(terms):  # how often a curve changes direction across the bands, on average
        out = augmenter(eq_probability=1.0, eq_db=12.0, eq_terms=terms)(x).numpy()[:, 0]
        return np.mean(np.sum(np.diff(np.sign(np.diff(out, axis=1)), axis=1) != 0, axis=1))
    assert turns(1) == 0  # one half-period: a tilt, no bump
    assert turns(12) > 2 * turns(4) > 0


def test_each_example_gets_its_own_draw_and_probability_zero_is_off():
    x = tf.constant(np.tile(logmel(tone(1000.0)[None], SPEC), (64, 1, 1)))
    warped = augmenter(warp_probability=1.0)(x).numpy()
    assert len({np.argmax(w.mean(axis=0)) for w in warped}) > 1
    assert np.array_equal(augmenter()(x).numpy(), x.numpy())
    half = augmenter(warp_probability=0.5, warp_alpha=(1.1, 1.15))(x).numpy()
    changed = np.mean([not np.array_equal(h, x.numpy()[0]) for h in half])
    assert 0.2 < changed < 0.8


def test_keys_are_off_by_default_range_checked_and_rerun_train_not_features():
    base = load_config(None, [])
    on = load_config(None, ["augment.mel_warp_probability=0.5", "augment.mel_eq_probability=0.5"])
    assert MelAugment.from_config(load_config(None, ["augment.mel_warp_probability=0",
                                                     "augment.mel_eq_probability=0"])) is None
    assert isinstance(MelAugment.from_config(on), MelAugment)
    assert on.features_dir == base.features_dir  # the feature cache is kept
    assert load_config(None, ["augment.mixup_alpha=0.4"]).features_dir == base.features_dir
    assert base.augment.mixup_alpha == 0
    for setting, key in (("augment.mel_warp_alpha=[1.2, 0.9]", "augment.mel_warp_alpha"),
                         ("augment.mel_eq_probability=2", "augment.mel_eq_probability"),
                         ("augment.mel_eq_db=-1", "augment.mel_eq_db"),
                         ("augment.mel_eq_terms=0", "augment.mel_eq_terms"),
                         ("augment.mixup_alpha=-0.1", "augment.mixup_alpha")):
        with pytest.raises(ConfigError) as e:
            load_config(None, [setting])
        assert key in str(e.value)


def test_blur_keeps_a_flat_spectrum_and_smooths_harmonics():
    flat_blur = blur_matrices(SPEC.n_mels, 2.0, steps=2)[-1]  # sigma 2 bands
    flat = np.full((51, SPEC.n_mels), -20.0, np.float32)
    np.testing.assert_allclose(flat @ flat_blur, flat, atol=1e-4)
    comb = logmel(sum(tone(250.0 * k) / k for k in range(1, 20))[None], SPEC)[0].mean(axis=0)
    low = slice(2, 14)  # bands under ~1 kHz (~70 Hz apart), where 250-Hz harmonics are resolved
    ripple = np.abs(np.diff(comb[low])).mean()
    assert np.abs(np.diff((comb @ flat_blur)[low])).mean() < ripple / 2
    (identity,) = blur_matrices(SPEC.n_mels, 2.0, steps=5)[:1]  # sigma 0: the first step changes nothing
    np.testing.assert_allclose(comb @ identity, comb, atol=1e-4)


def test_mixup_blends_features_and_labels_at_one_share_the_example_keeping_the_larger():
    """Example i is a constant log-mel of value i with the one-hot label i: after mixup, each example's features
    are the label-weighted mean of the values, its labels still sum to 1, and its own label keeps >= half."""
    tf.random.set_seed(0)
    batch, classes = 64, 64
    x = tf.constant(np.arange(batch, dtype=np.float32)[:, None, None] * np.ones((1, 5, 3), np.float32))
    y = tf.one_hot(tf.range(batch), classes)
    mixed_x, mixed_y = (t.numpy() for t in mixup(x, y, 0.4))
    np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(mixed_x, (mixed_y @ np.arange(classes, dtype=np.float32))[:, None, None]
                               * np.ones((1, 5, 3)), atol=1e-4)
    own = mixed_y[np.arange(batch), np.arange(batch)]
    assert np.all(own >= 0.5 - 1e-6)
    assert np.sum(own < 0.95) > batch // 8  # Beta(0.4, 0.4) folded: a good share of real blends
