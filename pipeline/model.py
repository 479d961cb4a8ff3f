"""The stacked-GRU keyword model. Backend-agnostic Keras 3 (keras.ops only), so the same definition
trains on TensorFlow (cuDNN kernel on GPU) and on the torch backend for the GPU check."""
from __future__ import annotations

import keras
import numpy as np

# GRU settings that keep the cuDNN kernel eligible (TF and torch backends). Changing any of these
# makes Keras fall back to the generic kernel on GPU, and train.require_cudnn names it.
CUDNN_GRU_SETTINGS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "reset_after": True,
    "use_bias": True,
    "unroll": False,
    "recurrent_dropout": 0.0,
}


def build_model(*, num_frames: int, n_mels: int, num_classes: int, gru_units: list[int], dense_units: int,
                dropout: float, mean: np.ndarray | None = None, variance: np.ndarray | None = None,
                use_cudnn: bool | str = "auto", unroll: bool = False) -> keras.Model:
    """Raw log-mel [batch, num_frames, n_mels] -> class probabilities [batch, num_classes].

    Normalization (train-set per-mel mean/variance) is the first layer, so exports take raw log-mel.
    ``unroll=True`` is only for export variants (full-int8 TFLite needs a loop-free graph).
    """
    if len(gru_units) < 2:
        raise ValueError(f"gru_units={gru_units}: need at least 2 stacked GRU layers")
    mean = np.zeros(n_mels, np.float32) if mean is None else np.asarray(mean, np.float32)
    variance = np.ones(n_mels, np.float32) if variance is None else np.asarray(variance, np.float32)
    inputs = keras.Input(shape=(num_frames, n_mels), name="features")
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalize")(inputs)
    for i, units in enumerate(gru_units):
        last = i == len(gru_units) - 1
        x = keras.layers.GRU(units, return_sequences=not last, use_cudnn=use_cudnn, name=f"gru_{i}",
                             **{**CUDNN_GRU_SETTINGS, "unroll": unroll})(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    # float32 softmax even under mixed_float16: float16 probabilities underflow
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")(x)
    return keras.Model(inputs, outputs, name="gru_kws")


def cudnn_blockers(model: keras.Model) -> dict[str, list[str]]:
    """For each GRU layer, the settings that keep it off the cuDNN kernel (empty list = eligible)."""
    result = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.GRU):
            cfg = layer.get_config()
            bad = []
            for key, want in CUDNN_GRU_SETTINGS.items():
                have = cfg.get(key)
                if key.endswith("activation"):
                    have = have if isinstance(have, str) else getattr(have, "__name__", str(have))
                if have != want:
                    bad.append(f"{key}={have!r} (cuDNN needs {want!r})")
            if getattr(layer, "use_cudnn", "auto") is False:
                bad.append("use_cudnn=False")
            result[layer.name] = bad
    return result


def build_from_config(cfg, stats: dict, **overrides) -> keras.Model:
    """The model of a config (``model.*``), sized and normalized by the feature cache's stats.json."""
    from pipeline.feature_spec import FeatureSpec

    m = cfg.model
    spec = FeatureSpec.from_dict(stats["feature_spec"])
    kwargs = dict(num_frames=spec.num_frames, n_mels=spec.n_mels, num_classes=len(stats["labels"]),
                  gru_units=m.gru_units, dense_units=m.dense_units, dropout=m.dropout,
                  mean=np.array(stats["mean"]), variance=np.array(stats["variance"]))
    kwargs.update(overrides)
    return build_model(**kwargs)
