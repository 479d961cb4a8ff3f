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


def build_from_config(cfg, stats: dict, *, one_tower: bool = False, **overrides) -> keras.Model:
    """The model of a config (``model.*``), sized and normalized by the feature cache's stats.json: the whole
    network (``model.towers`` towers folded into one, see ``fold_towers``), or with ``one_tower`` the size
    each tower trains at."""
    from pipeline.feature_spec import FeatureSpec

    m = cfg.model
    towers = 1 if one_tower else m.towers
    spec = FeatureSpec.from_dict(stats["feature_spec"])
    kwargs = dict(num_frames=spec.num_frames, n_mels=spec.n_mels, num_classes=len(stats["labels"]),
                  gru_units=[u * towers for u in m.gru_units], dense_units=m.dense_units * towers, dropout=m.dropout,
                  mean=np.array(stats["mean"]), variance=np.array(stats["variance"]))
    kwargs.update(overrides)
    return build_model(**kwargs)


def fold_towers(towers: list[keras.Model], into: keras.Model) -> keras.Model:
    """Load T trained models of one shape (the towers) into ``into``, the same layers at T times the sizes, so
    that ``into`` computes every tower side by side and scores the softmax of their mean logits (a geometric-
    mean ensemble, exactly: no retraining).

    Each GRU gate's matrices and the dense layer become block-diagonal (tower k's units are block k, and no
    unit reads another tower's), the first GRU reads the shared input, and the scores layer stacks the
    towers' output weights divided by T. Works for the 1-s model and its sequence form alike (same layers)."""
    count = len(towers)
    first_gru = next(layer for layer in into.layers if isinstance(layer, keras.layers.GRU))
    for layer in into.layers:
        if isinstance(layer, keras.layers.Normalization):  # its statistics are in the config, not weights
            stats = [(np.asarray(m.get_config()["mean"]), np.asarray(m.get_config()["variance"]))
                     for m in [layer, *(t.get_layer(layer.name) for t in towers)]]
            if not all(np.allclose(a, stats[0][0]) and np.allclose(b, stats[0][1]) for a, b in stats):
                raise ValueError("the towers and the folded network normalize differently: they must share one "
                                 "feature cache's statistics")
            continue
        parts = [t.get_layer(layer.name).get_weights() for t in towers]
        if not parts[0]:
            continue
        if isinstance(layer, keras.layers.GRU):
            kernels, recurrents, biases = zip(*parts)
            reads_input = layer is first_gru  # the later GRUs read their own tower's units only
            layer.set_weights([_gate_blocks(kernels, shared_rows=reads_input), _gate_blocks(recurrents, shared_rows=False),
                               _gate_blocks(biases, shared_rows=True)])
        elif layer.name == "dense":
            layer.set_weights([_block_diagonal([p[0] for p in parts]), np.concatenate([p[1] for p in parts])])
        elif layer.name == "scores":
            layer.set_weights([np.concatenate([p[0] for p in parts]) / count, np.mean([p[1] for p in parts], axis=0)])
        else:
            raise ValueError(f"fold_towers: no rule for layer {layer.name!r}")
    return into


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)), blocks[0].dtype)
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def _gate_blocks(mats: tuple[np.ndarray, ...], *, shared_rows: bool) -> np.ndarray:
    """A GRU weight [rows, 3 * units] of each tower -> the folded one: per gate (update, reset, candidate), the
    towers' columns side by side; rows shared (the first layer's input, the biases) or block-diagonal."""
    gates = [np.split(m, 3, axis=1) for m in mats]
    folded = []
    for g in range(3):
        blocks = [per_tower[g] for per_tower in gates]
        folded.append(np.concatenate(blocks, axis=1) if shared_rows else _block_diagonal(blocks))
    return np.concatenate(folded, axis=1)
