"""The model module: cuDNN eligibility report, require_cudnn, mixed precision output dtype."""
import keras
import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.model import build_model, cudnn_blockers
from pipeline.stages.train import cudnn_report

ARGS = dict(num_frames=101, n_mels=40, num_classes=12, gru_units=[16, 16], dense_units=8, dropout=0.1)


def test_default_model_is_cudnn_eligible_and_reports_it():
    model = build_model(**ARGS)
    blockers = cudnn_blockers(model)
    assert list(blockers) == ["gru_0", "gru_1"] and not any(blockers.values())
    assert all("cuDNN-eligible" in line for line in cudnn_report(blockers, gpu=True, require=True))


def test_require_cudnn_names_the_offending_setting():
    with pytest.raises(ConfigError, match=r"gru_1 can't use the cuDNN kernel: reset_after=False"):
        cudnn_report({"gru_0": [], "gru_1": ["reset_after=False (cuDNN needs True)"]}, gpu=True, require=True)
    with pytest.raises(ConfigError, match="no GPU visible"):
        cudnn_report({"gru_0": []}, gpu=False, require=True)
    assert "NOT cuDNN-eligible" in cudnn_report({"gru_0": ["unroll=True"]}, gpu=True, require=False)[0]


def test_use_cudnn_false_is_reported_as_a_blocker():
    assert cudnn_blockers(build_model(**ARGS, use_cudnn=False))["gru_0"] == ["use_cudnn=False"]


def test_mixed_float16_keeps_float32_scores():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(**ARGS)
        out = model(np.zeros((2, 101, 40), np.float32))
        assert model.get_layer("gru_0").compute_dtype == "float16"
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, atol=1e-5)
        assert not any(cudnn_blockers(model).values())
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_normalization_uses_train_statistics():
    mean, var = np.linspace(-50, 0, 40), np.linspace(1, 100, 40)
    model = build_model(**ARGS, mean=mean, variance=var)
    x = np.broadcast_to(mean, (1, 101, 40)).astype(np.float32)
    normalized = model.get_layer("normalize")(x)
    np.testing.assert_allclose(np.asarray(normalized), 0.0, atol=1e-5)
