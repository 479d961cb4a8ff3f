"""Verify stage: every exported artifact runs on the whole test split (real TFLite interpreter runs)
and is compared with the Keras model. Results go into manifest.json ``artifacts[*].checks``.

Fails loudly (non-zero exit) when a float32 artifact differs from Keras by more than 1e-4 in any class
score, when the in-graph frontend differs from librosa by more than 1e-3 dB, or when a TFLite model
uses anything but builtin ops.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config
from pipeline.feature_spec import FeatureSpec, logmel

FLOAT_TOLERANCE = 1e-4  # max |score difference| vs Keras for float32 artifacts
FRONTEND_TOLERANCE_DB = 1e-3  # max |log-mel difference| vs librosa for the in-graph frontend
ACCURACY_DROP_GOALS = {"dynamic_range": 0.5, "int8": 1.0, "streaming_int8": 1.0}  # points, reported


class VerificationError(RuntimeError):
    pass


def test_audio(cfg: Config, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """The valid test clips as audio [N, clip_samples] and their label indices [N]."""
    from pipeline.features import load_clip
    from pipeline.prepare import read_rows

    rows = read_rows(cfg.prepared_dir, "test")
    valid = np.load(cfg.features_dir / "test_valid.npy")
    labels = np.load(cfg.features_dir / "test_labels.npy")[valid]
    audio = np.stack([load_clip(row, spec) for row, ok in zip(rows, valid) if ok]).astype(np.float32)
    return audio, labels


def tflite_ops(interpreter) -> list[str]:
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def non_builtin_ops(ops: list[str]) -> list[str]:
    """Flex (SELECT_TF_OPS) and custom ops; a phone app would need extra delegates for them."""
    return [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]


class TFLiteRunner:
    """A TFLite model called with a dict of inputs by signature name (TFLite orders tensors by name)."""

    def __init__(self, path: Path, *, threads: int = 1):
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.ops = tflite_ops(self.interpreter)
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, inputs: dict) -> dict:
        t0 = time.perf_counter()
        out = self.runner(**{k: np.asarray(v, np.float32) for k, v in inputs.items()})
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * self.seconds / max(1, self.calls)


def compare(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {"accuracy": round(float((scores.argmax(1) == labels).mean()), 6),
            "max_abs_diff_vs_keras": float(np.abs(scores - reference).max()),
            "top1_agreement": round(float((scores.argmax(1) == reference.argmax(1)).mean()), 6)}


def run(cfg: Config) -> Path:
    import keras
    import tensorflow as tf

    from pipeline.export import StreamGeometry, stream_clip_numpy

    run_dir = cfg.run_dir
    manifest = json.loads((run_dir / "export.json").read_text())
    spec = FeatureSpec.from_dict(manifest["feature_spec"])
    audio, labels = test_audio(cfg, spec)
    features = logmel(audio, spec)  # float32 librosa features: the reference input
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    reference = model.predict(features, batch_size=256, verbose=0)
    keras_accuracy = float((reference.argmax(1) == labels).mean())
    print(f"verify: Keras model {keras_accuracy:.4f} on {len(labels)} test clips")
    failures = []

    for art in manifest["artifacts"]:
        path = run_dir / art["path"]
        checks = {"num_examples": int(len(labels))}
        if art["kind"] == "saved_model":
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["features"]
            t0 = time.perf_counter()
            scores = np.concatenate([fn(features=tf.constant(features[i:i + 256]))["scores"].numpy()
                                     for i in range(0, len(features), 256)])
            checks["mean_latency_ms_per_clip_batched"] = round(1000 * (time.perf_counter() - t0) / len(features), 4)
            checks.update(compare(scores, reference, labels))
            audio_out = [loaded.signatures["audio"](audio=tf.constant(audio[i:i + 256])) for i in range(0, len(audio), 256)]
            audio_scores = np.concatenate([o["scores"].numpy() for o in audio_out])
            checks["audio_signature"] = compare(audio_scores, reference, labels)
            checks["audio_signature"]["logmel_max_abs_diff_db"] = float(max(
                np.abs(o["logmel"].numpy() - features[i * 256:(i + 1) * 256]).max() for i, o in enumerate(audio_out)))
            checks["cudnn_ops_in_graph"] = []  # export refuses graphs with CudnnRNN*
        else:
            runner = TFLiteRunner(path)
            checks["ops"] = runner.ops
            checks["non_builtin_ops"] = non_builtin_ops(runner.ops)
            checks["builtins_only"] = not checks["non_builtin_ops"]
            if not checks["builtins_only"]:
                failures.append(f"{art['path']}: non-builtin ops {checks['non_builtin_ops']}")
            if art["variant"] in ("streaming", "streaming_int8"):
                geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
                scores = np.stack([stream_clip_numpy(runner, geometry, clip)
                                   for clip in tqdm(audio, desc=f"verify {art['path']}", unit="clip", leave=False)])
                checks["mean_latency_ms_per_hop"] = round(runner.mean_latency_ms, 5)
                checks["real_time_factor"] = round(runner.mean_latency_ms / (1000 * geometry.hop / spec.sample_rate), 6)
            elif art["input"] == "audio":
                outs = [runner({"audio": clip[None]}) for clip in tqdm(audio, desc=f"verify {art['path']}", unit="clip", leave=False)]
                scores = np.concatenate([o["scores"] for o in outs])
                checks["logmel_max_abs_diff_db"] = float(max(np.abs(o["logmel"][0] - f).max() for o, f in zip(outs, features)))
                checks["mean_latency_ms_per_clip"] = round(runner.mean_latency_ms, 4)
                if checks["logmel_max_abs_diff_db"] > FRONTEND_TOLERANCE_DB:
                    failures.append(f"{art['path']}: in-graph log-mel differs from librosa by "
                                    f"{checks['logmel_max_abs_diff_db']:.2e} dB > {FRONTEND_TOLERANCE_DB}")
            else:
                scores = np.concatenate([runner({"features": f[None]})["scores"]
                                         for f in tqdm(features, desc=f"verify {art['path']}", unit="clip", leave=False)])
                checks["mean_latency_ms_per_clip"] = round(runner.mean_latency_ms, 4)
            checks.update(compare(scores, reference, labels))
        checks["accuracy_drop_points"] = round(100 * (keras_accuracy - checks["accuracy"]), 3)
        if art["variant"] in ("float32", "streaming"):
            checks["tolerance"] = FLOAT_TOLERANCE
            checks["parity_ok"] = checks["max_abs_diff_vs_keras"] <= FLOAT_TOLERANCE
            if not checks["parity_ok"]:
                failures.append(f"{art['path']}: max score difference vs Keras {checks['max_abs_diff_vs_keras']:.2e} "
                                f"> {FLOAT_TOLERANCE}")
        else:
            goal = ACCURACY_DROP_GOALS.get(art["variant"])
            checks["accuracy_drop_goal_points"] = goal
            checks["accuracy_drop_within_goal"] = goal is None or checks["accuracy_drop_points"] <= goal
        art["checks"] = checks
        print(f"verify: {art['path']:32s} acc {checks['accuracy']:.4f}  max|diff| {checks['max_abs_diff_vs_keras']:.2e}"
              f"  top-1 agree {checks['top1_agreement']:.4f}")

    manifest["verified"] = {"keras_test_accuracy": round(keras_accuracy, 6), "ok": not failures, "failures": failures,
                            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = run_dir / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(run_dir / "manifest.json")
    if failures:
        raise VerificationError("verify failed: " + "; ".join(failures))
    print(f"verify: all {len(manifest['artifacts'])} artifacts within limits -> {run_dir / 'manifest.json'}")
    return run_dir / "manifest.json"
