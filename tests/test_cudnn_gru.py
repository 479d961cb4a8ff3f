"""The Keras GRU with CUDNN_GRU_SETTINGS computes the cuDNN GRU equations (checked against NumPy).

cuDNN's GRU (reset_after=True, two bias vectors), with Keras' column order z, r, h:
    z  = sigmoid(x W_z + b_iz + h W_hz + b_hz)
    r  = sigmoid(x W_r + b_ir + h W_hr + b_hr)
    hh = tanh(x W_h + b_ih + r * (h W_hh + b_hh))      (reset applied after the recurrent matmul)
    h' = z * h + (1 - z) * hh
"""
from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.model import CUDNN_GRU_SETTINGS, build_model, cudnn_blockers

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="these checks run the TF backend")

TOL = 1e-5
FRAMES, MELS = 101, 40


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gru_reference(x: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray,
                  bias: np.ndarray) -> np.ndarray:
    """x [batch, time, features] -> hidden states [batch, time, units], zero initial state, float64.

    kernel [features, 3*units], recurrent_kernel [units, 3*units] (columns z, r, h),
    bias [2, 3*units]: row 0 the input bias, row 1 the recurrent bias.
    """
    x, kernel, recurrent_kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, recurrent_kernel, bias))
    units = recurrent_kernel.shape[0]
    z_, r_, h_ = slice(0, units), slice(units, 2 * units), slice(2 * units, 3 * units)
    h = np.zeros((x.shape[0], units))
    outputs = []
    for t in range(x.shape[1]):
        xw = x[:, t] @ kernel + bias[0]
        hw = h @ recurrent_kernel + bias[1]
        z = sigmoid(xw[:, z_] + hw[:, z_])
        r = sigmoid(xw[:, r_] + hw[:, r_])
        hh = np.tanh(xw[:, h_] + r * hw[:, h_])
        h = z * h + (1.0 - z) * hh
        outputs.append(h)
    return np.stack(outputs, axis=1)


def model_reference(model: keras.Model, x: np.ndarray, *, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """The whole build_model network in NumPy (inference): x [batch, frames, n_mels] -> [batch, classes]."""
    h = (x - mean) / np.maximum(np.sqrt(variance), keras.config.epsilon())
    grus = [layer for layer in model.layers if isinstance(layer, keras.layers.GRU)]
    for layer in grus:
        h = gru_reference(h, *layer.get_weights())
    h = h[:, -1]  # the last GRU returns its final state only
    w, b = model.get_layer("dense").get_weights()
    h = np.maximum(h @ w + b, 0.0)
    w, b = model.get_layer("scores").get_weights()
    logits = h @ w + b
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def randomize_gru_weights(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-zero biases (both rows) and weights of a scale that keeps the gates away from saturation."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.GRU):
            layer.set_weights([rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])


def single_gru(units: int, *, use_cudnn: bool | str = "auto") -> keras.Model:
    inputs = keras.Input((FRAMES, MELS))
    outputs = keras.layers.GRU(units, return_sequences=True, use_cudnn=use_cudnn, **CUDNN_GRU_SETTINGS)(inputs)
    return keras.Model(inputs, outputs)


def stacked_model(*, use_cudnn: bool | str = "auto") -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """build_model with 2 GRU layers and random normalization statistics; returns (model, mean, variance)."""
    rng = np.random.default_rng(1)
    mean = rng.normal(-40.0, 10.0, MELS).astype(np.float32)
    variance = rng.uniform(50.0, 200.0, MELS).astype(np.float32)
    keras.utils.set_random_seed(2)
    model = build_model(num_frames=FRAMES, n_mels=MELS, num_classes=12, gru_units=[48, 32], dense_units=16,
                        dropout=0.2, mean=mean, variance=variance, use_cudnn=use_cudnn)
    randomize_gru_weights(model, rng)
    return model, mean, variance


def log_mel_batch(batch: int = 4) -> np.ndarray:
    """Random log-mel-like input [batch, FRAMES, MELS], roughly the scale of real dB features."""
    return np.random.default_rng(3).normal(-40.0, 12.0, (batch, FRAMES, MELS)).astype(np.float32)


def check_single_gru(use_cudnn: bool | str) -> float:
    model = single_gru(24, use_cudnn=use_cudnn)
    randomize_gru_weights(model, np.random.default_rng(0))
    x = np.random.default_rng(4).normal(0.0, 1.0, (3, FRAMES, MELS)).astype(np.float32)
    got = np.asarray(model(x, training=False))
    want = gru_reference(x, *model.layers[1].get_weights())
    return float(np.abs(got - want).max())


def check_stacked(use_cudnn: bool | str) -> tuple[float, float]:
    """Max abs diffs of (last GRU state, class probabilities) against the NumPy network."""
    model, mean, variance = stacked_model(use_cudnn=use_cudnn)
    x = log_mel_batch()
    probs = np.asarray(model(x, training=False))
    last_gru = keras.Model(model.input, model.get_layer("gru_1").output)
    state = np.asarray(last_gru(x, training=False))
    h = (x - mean) / np.sqrt(variance)
    want_state = gru_reference(gru_reference(h, *model.get_layer("gru_0").get_weights()),
                               *model.get_layer("gru_1").get_weights())[:, -1]
    return (float(np.abs(state - want_state).max()),
            float(np.abs(probs - model_reference(model, x, mean=mean, variance=variance)).max()))


def test_reference_is_not_trivial():
    """Guards the reference itself: reset_after=False (reset before the matmul) must give other numbers."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 10, 5))
    kernel, recurrent, bias = rng.normal(size=(5, 12)), rng.normal(size=(4, 12)), rng.normal(size=(2, 12))
    inputs = keras.Input((10, 5))
    layer = keras.layers.GRU(4, return_sequences=True, reset_after=False)
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel, recurrent, bias[0] + bias[1]])
    assert np.abs(np.asarray(model(x.astype(np.float32))) - gru_reference(x, kernel, recurrent, bias)).max() > 1e-3


def test_single_gru_matches_cudnn_equations():
    assert check_single_gru("auto") < TOL


def test_stacked_build_model_matches_cudnn_equations():
    state_diff, probs_diff = check_stacked("auto")
    assert state_diff < TOL
    assert probs_diff < TOL


def test_build_model_has_no_cudnn_blockers():
    model, _, _ = stacked_model()
    blockers = cudnn_blockers(model)
    assert set(blockers) == {"gru_0", "gru_1"}
    assert all(not bad for bad in blockers.values()), blockers


@pytest.mark.parametrize("setting, value", [
    ("reset_after", False),
    ("recurrent_dropout", 0.1),
    ("activation", "relu"),
    ("recurrent_activation", "hard_sigmoid"),
    ("use_bias", False),
    ("unroll", True),
])
def test_cudnn_blockers_names_the_setting(setting, value):
    inputs = keras.Input((FRAMES, MELS))
    good = keras.layers.GRU(8, return_sequences=True, name="good", **CUDNN_GRU_SETTINGS)(inputs)
    bad = keras.layers.GRU(8, name="bad", **{**CUDNN_GRU_SETTINGS, setting: value})(good)
    blockers = cudnn_blockers(keras.Model(inputs, bad))
    assert blockers["good"] == []
    assert len(blockers["bad"]) == 1 and blockers["bad"][0].startswith(f"{setting}="), blockers


def test_cudnn_blockers_names_use_cudnn_false():
    model, _, _ = stacked_model(use_cudnn=False)
    assert all(bad == ["use_cudnn=False"] for bad in cudnn_blockers(model).values())


def _gpus() -> list:
    import tensorflow as tf
    return tf.config.list_physical_devices("GPU")


@pytest.mark.gpu
@pytest.mark.skipif(keras.backend.backend() != "tensorflow" or not _gpus(), reason="needs a GPU visible to TF")
def test_cudnn_kernel_on_gpu_matches_equations():
    """use_cudnn=True: Keras raises instead of falling back, so this really runs the cuDNN kernel."""
    import tensorflow as tf
    tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)  # TF32 alone gives ~1e-3 differences
    try:
        with tf.device("/GPU:0"):
            single = check_single_gru(True)
            state_diff, probs_diff = check_stacked(True)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    assert single < TOL
    assert state_diff < TOL
    assert probs_diff < TOL
