"""Weights trained on the Keras torch backend (scripts/gpu_check.py) load into the TF-backend model.

scripts/gpu_check.py runs in a subprocess with KERAS_BACKEND=torch on CPU, with tensorflow hidden from
it as on the GPU machine (which has no TensorFlow); its saved weights, loaded into the model that
build_model makes on TF, must give its saved outputs on the same inputs. The same check runs on the
weights and outputs of the real GPU run kept in scripts/gpu_results/ (no torch needed for that one).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.model import build_model

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="loads the weights into the TF-backend model")

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "scripts" / "gpu_check.py"
GPU_RESULTS = ROOT / "scripts" / "gpu_results"
TOL = 1e-4

# Runs a script with tensorflow unfindable (importlib.util.find_spec -> None), as on a torch-only machine.
WITHOUT_TENSORFLOW = """
import importlib.machinery, runpy, sys
class HideTensorflow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_io"):
            return None
        return super().find_spec(name, path, target)
sys.meta_path[:] = [HideTensorflow if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def tf_max_diffs(run_dir: Path) -> dict[str, float]:
    """For each mode whose weights run_dir holds: max |TF-backend probs - saved torch-backend probs|.

    outputs.npz holds x [batch, frames, n_mels] and probs_<mode> [batch, classes].
    """
    report = json.loads((run_dir / "report.json").read_text())
    outputs = np.load(run_dir / "outputs.npz")
    diffs = {}
    for mode in report["modes"]:
        if not (run_dir / f"{mode}.weights.h5").exists():
            continue
        model = build_model(**report["model"])
        model.load_weights(run_dir / f"{mode}.weights.h5")
        probs = np.asarray(model(outputs["x"], training=False))
        diffs[mode] = float(np.abs(probs - outputs[f"probs_{mode}"]).max())
    return diffs


@pytest.fixture(scope="module")
def torch_cpu_run(tmp_path_factory) -> Path:
    """A tiny gpu_check.py run on CPU (torch backend); returns its --out folder."""
    if importlib.util.find_spec("torch") is None:  # (not imported here: keep torch out of the TF process)
        pytest.skip("torch is not installed")
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": "", "KERAS_TORCH_DEVICE": "cpu"}
    cmd = [sys.executable, "-c", WITHOUT_TENSORFLOW, str(GPU_CHECK), "--steps", "2", "--warmup-steps", "1",
           "--batch-size", "8", "--units", "16", "12", "--dense-units", "8", "--frames", "30", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow  # trains through scripts/gpu_check.py in a torch subprocess
def test_gpu_check_report(torch_cpu_run):
    report = json.loads((torch_cpu_run / "report.json").read_text())
    assert report["keras_backend"] == "torch" and report["tensorflow_imported"] is False
    assert report["model"]["gru_units"] == [16, 12]
    for mode in ("auto", "false"):
        assert report["modes"][mode]["steps"] == 2 and report["modes"][mode]["steps_per_s"] > 0
    # on CPU "auto" takes keras' pure-torch GRU loop, never cuDNN; use_cudnn=False takes neither kernel
    auto_calls = report["modes"]["auto"]["kernel_calls"]
    assert auto_calls["cudnn_gru_ok"] == 0 and auto_calls["fallback_gru_cpu"] > 0
    assert report["modes"]["auto"]["cudnn_path_taken"] is False
    assert not report["modes"]["false"]["kernel_calls"].get("fallback_gru_cpu")
    assert set(np.load(torch_cpu_run / "outputs.npz").files) >= {"x", "probs_auto", "probs_false"}


@pytest.mark.slow
def test_torch_trained_weights_give_same_outputs_on_tf(torch_cpu_run):
    diffs = tf_max_diffs(torch_cpu_run)
    assert set(diffs) == {"auto", "false"}
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.skipif(not (GPU_RESULTS / "outputs.npz").exists(), reason="no GPU run kept in scripts/gpu_results")
def test_gpu_trained_weights_give_same_outputs_on_tf():
    """Weights trained on a GPU through torch's cuDNN GRU; outputs there were computed with TF32 off."""
    diffs = tf_max_diffs(GPU_RESULTS)
    assert diffs, "scripts/gpu_results has outputs.npz but no weights"
    assert max(diffs.values()) < TOL, diffs
