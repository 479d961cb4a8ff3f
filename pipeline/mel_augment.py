"""Voice augmentations on the log-mel features, drawn anew for every example in every epoch.

The waveform augmentations (pipeline/augment.py) run once, offline, into the feature cache: with
``augment.copies: 1`` each training clip has two versions, so a clip meets the same one or two voices in
every epoch. These run in the training input pipeline instead, like SpecAugment, and cost next to nothing:

- **mel warp** (``augment.mel_warp_*``): the mel axis read at frequencies scaled by a factor alpha, as if
  the vocal tract were 1/alpha as long (VTLP on the features: every formant moves by alpha).
- **mel blur** (``augment.mel_blur_*``): the bands smoothed across frequency by a Gaussian of up to
  ``mel_blur_bands``: the voice's harmonics (resolved in the low bands) blurred, its formants kept, as if
  the pitch and voice quality were unknown.
- **mel EQ** (``augment.mel_eq_*``): a smooth random curve, up to ``mel_eq_db`` dB, added across the mel
  bands: another microphone, room colouring or voice quality (a linear filter is a sum in dB).

All three work on the raw dB log-mel, before the model's normalization. So does ``mixup`` (``augment.mixup_alpha``),
which blends examples of a batch and their labels alike.
"""
from __future__ import annotations

import numpy as np

WARP_STEPS = 33  # alphas on a grid: one interpolation matrix each, picked at random per example


def mel_centres(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Centre frequency (Hz) of each band of librosa's Slaney mel filter bank."""
    import librosa

    return librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]


def warp_matrices(n_mels: int, fmin: float, fmax: float, alpha: tuple[float, float],
                  steps: int = WARP_STEPS) -> np.ndarray:
    """float32 [steps, n_mels, n_mels]: ``x @ W[k]`` reads band b of a [frames, n_mels] log-mel at the
    frequency centre_b / alpha_k (linear interpolation between bands, the edge bands held)."""
    centres = mel_centres(n_mels, fmin, fmax)
    matrices = np.zeros((steps, n_mels, n_mels), np.float32)
    for k, a in enumerate(np.linspace(alpha[0], alpha[1], steps)):
        source = np.interp(centres / a, centres, np.arange(n_mels))  # fractional band index, clamped at the edges
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, n_mels - 1)
        frac = (source - low).astype(np.float32)
        matrices[k, low, np.arange(n_mels)] += 1 - frac
        matrices[k, high, np.arange(n_mels)] += frac
    return matrices


def blur_matrices(n_mels: int, sigma: float, steps: int = WARP_STEPS) -> np.ndarray:
    """float32 [steps, n_mels, n_mels]: ``x @ B[k]`` smooths a log-mel across the bands with a Gaussian of
    sigma_k bands (0 to ``sigma``; each column sums to 1, so a flat spectrum stays flat)."""
    bands = np.arange(n_mels)
    matrices = np.zeros((steps, n_mels, n_mels), np.float32)
    for k, s in enumerate(np.linspace(0.0, sigma, steps)):
        weights = np.exp(-0.5 * ((bands[:, None] - bands[None, :]) / max(s, 1e-3)) ** 2)
        matrices[k] = weights / weights.sum(axis=0, keepdims=True)
    return matrices


def eq_basis(n_mels: int, terms: int) -> np.ndarray:
    """float32 [terms, n_mels]: cosines of 1..terms half-periods across the mel axis."""
    bands = (np.arange(n_mels) + 0.5) / n_mels
    return np.stack([np.cos(np.pi * (k + 1) * bands) for k in range(terms)]).astype(np.float32)


class MelAugment:
    """The in-pipeline voice augmentations of one config; ``None`` from ``from_config`` when both are off."""

    def __init__(self, *, n_mels: int, fmin: float, fmax: float, warp_probability: float,
                 warp_alpha: tuple[float, float], eq_probability: float, eq_db: float, eq_terms: int,
                 blur_probability: float, blur_bands: float):  # no defaults here: the config's are the ones
        self.warp_probability = warp_probability
        self.blur_probability = blur_probability
        self.blurs = blur_matrices(n_mels, blur_bands)
        self.eq_probability = eq_probability
        self.eq_db = eq_db
        self.matrices = warp_matrices(n_mels, fmin, fmax, tuple(warp_alpha))
        self.basis = eq_basis(n_mels, eq_terms)

    @classmethod
    def from_config(cls, cfg) -> "MelAugment | None":
        a, f = cfg.augment, cfg.features
        if a.mel_warp_probability <= 0 and a.mel_eq_probability <= 0 and a.mel_blur_probability <= 0:
            return None
        return cls(n_mels=f.n_mels, fmin=f.fmin, fmax=f.fmax, warp_probability=a.mel_warp_probability,
                   warp_alpha=a.mel_warp_alpha, eq_probability=a.mel_eq_probability, eq_db=a.mel_eq_db,
                   blur_probability=a.mel_blur_probability, blur_bands=a.mel_blur_bands,
                   eq_terms=a.mel_eq_terms)

    def __call__(self, x):
        """x: float32 [batch, frames, n_mels] dB log-mel -> the same shape, each example its own draw."""
        import tensorflow as tf

        batch = tf.shape(x)[0]

        def some(x, matrices, probability):  # each example through a random one of the matrices, or as it was
            pick = tf.random.uniform([batch], 0, len(matrices), dtype=tf.int32)
            changed = tf.einsum("btm,bmn->btn", x, tf.gather(tf.constant(matrices), pick))
            return tf.where(tf.random.uniform([batch, 1, 1]) < probability, changed, x)

        if self.warp_probability > 0:
            x = some(x, self.matrices, self.warp_probability)
        if self.blur_probability > 0:
            x = some(x, self.blurs, self.blur_probability)
        if self.eq_probability > 0:
            weights = tf.random.uniform([batch, len(self.basis)], -1.0, 1.0)
            curve = tf.matmul(weights, tf.constant(self.basis))  # [batch, n_mels]
            peak = tf.reduce_max(tf.abs(curve), axis=1, keepdims=True) + 1e-6
            depth = tf.random.uniform([batch, 1], 0.0, self.eq_db)  # how far the curve reaches, in dB
            on = tf.cast(tf.random.uniform([batch, 1]) < self.eq_probability, tf.float32)
            x = x + (on * depth * curve / peak)[:, None, :]
        return x


def mixup(x, y, alpha: float):
    """x float32 [batch, frames, n_mels], y float32 [batch, classes] -> each example blended with a random other
    of the batch, features and labels at the same share: lambda ~ Beta(alpha, alpha), folded so that the example
    keeps the larger share (``augment.mixup_alpha``; Zhang et al. 2018 mixed spectrograms of Speech Commands)."""
    import tensorflow as tf

    batch = tf.shape(x)[0]
    a, b = tf.random.gamma([batch], alpha), tf.random.gamma([batch], alpha)
    share = a / (a + b + 1e-12)
    share = tf.maximum(share, 1.0 - share)
    partner = tf.random.shuffle(tf.range(batch))
    mixed_x = share[:, None, None] * x + (1.0 - share[:, None, None]) * tf.gather(x, partner)
    mixed_y = share[:, None] * y + (1.0 - share[:, None]) * tf.gather(y, partner)
    return mixed_x, mixed_y
