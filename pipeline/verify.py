"""Verify stage: every exported artifact runs on the whole test split (real TFLite interpreter runs)
and is compared with the Keras model. Results go into manifest.json ``artifacts[*].checks``.

Fails loudly (non-zero exit, manifest.json marked ``verified.ok: false``) when a float32 artifact's
class scores differ from Keras by more than 1e-4, when an in-graph frontend differs from librosa by more
than 1e-3 dB (in bins within 60 dB of their frame's peak; see FRONTEND_RANGE_DB), or when a TFLite model
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
FRONTEND_TOLERANCE_DB = 1e-3  # max |log-mel difference| vs librosa for the in-graph frontends ...
FRONTEND_RANGE_DB = 60.0  # ... in bins within 60 dB of their frame's peak: below that, float32 FFT
#                           round-off (relative to the frame's energy) dominates, in TFLite as in TF
FRONTEND_TOLERANCE_ALL_DB = 0.05  # and over every bin
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


def non_builtin_ops(ops: list[str]) -> list[str]:
    """Flex (SELECT_TF_OPS) and custom ops; a phone app would need extra delegates for them."""
    return [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]


class TFLiteRunner:
    """A TFLite model called with a dict of inputs by signature name (TFLite orders tensors by name)."""

    def __init__(self, path: Path, *, threads: int = 1):
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_names = set(self.runner.get_input_details())
        self.ops = sorted({op["op_name"] for op in self.interpreter._get_ops_details()})
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


class SplitStreamingRunner:
    """The float streaming frontend + the int8 network step, driven like the one-piece streaming model."""

    def __init__(self, frontend: TFLiteRunner, network: TFLiteRunner | None, *, state_names: list[str]):
        self.frontend, self.network, self.state_names = frontend, network, state_names
        self.frames: list[np.ndarray] = []  # every log-mel frame the frontend completed
        self.scores = None

    def __call__(self, inputs: dict) -> dict:
        front = self.frontend({k: inputs[k] for k in ("audio_hop", "buffer", "warmup")})
        out = {"new_buffer": front["new_buffer"], "new_warmup": front["new_warmup"]}
        out.update({f"new_{n}": inputs[n] for n in self.state_names})
        if front["ready"][0, 0] >= 1:
            self.frames.append(front["logmel"][0])
        if front["ready"][0, 0] >= 1 and self.network is not None:
            net = self.network({"logmel": front["logmel"], **{n: inputs[n] for n in self.state_names}})
            out.update({f"new_{n}": net[f"new_{n}"] for n in self.state_names})
            self.scores = net["scores"]
        out["scores"] = self.scores
        return out


def compare(scores: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {"accuracy": round(float((scores.argmax(1) == labels).mean()), 6),
            "max_abs_diff_vs_keras": float(np.abs(scores - reference).max()),
            "top1_agreement": round(float((scores.argmax(1) == reference.argmax(1)).mean()), 6)}


def frontend_diff(got: np.ndarray, reference: np.ndarray) -> dict:
    """Log-mel difference vs librosa [..., T, M], overall and within FRONTEND_RANGE_DB of each frame's peak."""
    diff = np.abs(got - reference)
    in_range = reference >= reference.max(axis=-1, keepdims=True) - FRONTEND_RANGE_DB
    return {"logmel_max_abs_diff_db": float(diff.max()), "logmel_max_abs_diff_db_within_60db": float(diff[in_range].max())}


def frontend_failures(name: str, checks: dict) -> list[str]:
    bad = []
    if checks["logmel_max_abs_diff_db_within_60db"] > FRONTEND_TOLERANCE_DB:
        bad.append(f"{name}: log-mel differs from librosa by {checks['logmel_max_abs_diff_db_within_60db']:.2e} dB "
                   f"> {FRONTEND_TOLERANCE_DB} (bins within {FRONTEND_RANGE_DB:.0f} dB of the frame peak)")
    if checks["logmel_max_abs_diff_db"] > FRONTEND_TOLERANCE_ALL_DB:
        bad.append(f"{name}: log-mel differs from librosa by {checks['logmel_max_abs_diff_db']:.2e} dB > "
                   f"{FRONTEND_TOLERANCE_ALL_DB}")
    return bad


def _bar(items, name: str):
    return tqdm(items, desc=f"verify {name}", unit="clip", leave=False, disable=None)


def check_saved_model(path: Path, features: np.ndarray, audio: np.ndarray, reference, labels) -> dict:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    t0 = time.perf_counter()
    scores = np.concatenate([loaded.signatures["features"](features=tf.constant(features[i:i + 256]))["scores"].numpy()
                             for i in range(0, len(features), 256)])
    checks = {"mean_latency_ms_per_clip_batched": round(1000 * (time.perf_counter() - t0) / len(features), 4)}
    checks.update(compare(scores, reference, labels))
    outs = [loaded.signatures["audio"](audio=tf.constant(audio[i:i + 256])) for i in range(0, len(audio), 256)]
    checks["audio_signature"] = compare(np.concatenate([o["scores"].numpy() for o in outs]), reference, labels)
    checks["audio_signature"].update(frontend_diff(np.concatenate([o["logmel"].numpy() for o in outs]), features))
    return checks


def check_tflite(art: dict, run_dir: Path, manifest: dict, spec: FeatureSpec, features, audio, reference, labels) -> dict:
    """Runs one TFLite artifact over the test clips; returns its checks (scores compared by the caller)."""
    from pipeline.export import StreamGeometry, stream_clip_numpy

    runner = TFLiteRunner(run_dir / art["path"])
    checks = {"ops": runner.ops, "non_builtin_ops": non_builtin_ops(runner.ops)}
    checks["builtins_only"] = not checks["non_builtin_ops"]
    geometry = StreamGeometry.from_spec(spec, manifest["model"]["gru_units"])
    state_names = [n for n in geometry.state_shapes if n.endswith("_state")]
    variant, name = art["variant"], art["path"]
    if variant == "streaming_frontend":
        split = SplitStreamingRunner(runner, None, state_names=state_names)
        frames = []
        for clip in _bar(audio, name):
            split.frames = []
            stream_clip_numpy(split, geometry, clip)
            frames.append(np.stack(split.frames))
        checks.update(frontend_diff(np.stack(frames), features))
        checks["mean_latency_ms_per_hop"] = round(runner.mean_latency_ms, 5)
        return checks
    if variant in ("streaming", "streaming_int8"):
        step = runner
        if variant == "streaming_int8":
            step = SplitStreamingRunner(TFLiteRunner(run_dir / art["frontend"]), runner, state_names=state_names)
        scores = np.stack([stream_clip_numpy(step, geometry, clip) for clip in _bar(audio, name)])
        hops = runner.calls if variant == "streaming" else step.frontend.calls
        seconds = runner.seconds + (step.frontend.seconds if variant == "streaming_int8" else 0.0)
        checks["mean_latency_ms_per_hop"] = round(1000 * seconds / hops, 5)
        checks["real_time_factor"] = round(checks["mean_latency_ms_per_hop"] / (1000 * geometry.hop / spec.sample_rate), 6)
    elif art["input"] == "audio":
        outs = [runner({"audio": clip[None]}) for clip in _bar(audio, name)]
        scores = np.concatenate([o["scores"] for o in outs])
        checks.update(frontend_diff(np.concatenate([o["logmel"] for o in outs]), features))
        checks["mean_latency_ms_per_clip"] = round(runner.mean_latency_ms, 4)
    else:
        scores = np.concatenate([runner({"features": f[None]})["scores"] for f in _bar(features, name)])
        checks["mean_latency_ms_per_clip"] = round(runner.mean_latency_ms, 4)
    checks.update(compare(scores, reference, labels))
    return checks


def run(cfg: Config) -> Path:
    import keras

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
        name = art["path"]
        if art["kind"] == "saved_model":
            checks = check_saved_model(run_dir / name, features, audio, reference, labels)
            failures += frontend_failures(f"{name} (audio signature)", checks["audio_signature"])
        else:
            checks = check_tflite(art, run_dir, manifest, spec, features, audio, reference, labels)
            if not checks["builtins_only"]:
                failures.append(f"{name}: non-builtin ops {checks['non_builtin_ops']}")
        checks["num_examples"] = int(len(labels))
        if "logmel_max_abs_diff_db" in checks:
            failures += frontend_failures(name, checks)
        if "accuracy" in checks:
            checks["accuracy_drop_points"] = round(100 * (keras_accuracy - checks["accuracy"]), 3)
            if art["variant"] in ("float32", "streaming"):
                checks["tolerance"] = FLOAT_TOLERANCE
                checks["parity_ok"] = checks["max_abs_diff_vs_keras"] <= FLOAT_TOLERANCE
                if not checks["parity_ok"]:
                    failures.append(f"{name}: max score difference vs Keras {checks['max_abs_diff_vs_keras']:.2e} "
                                    f"> {FLOAT_TOLERANCE}")
            else:
                goal = ACCURACY_DROP_GOALS.get(art["variant"])
                checks["accuracy_drop_goal_points"] = goal
                checks["accuracy_drop_within_goal"] = goal is None or checks["accuracy_drop_points"] <= goal
            print(f"verify: {name:34s} acc {checks['accuracy']:.4f}  max|diff| {checks['max_abs_diff_vs_keras']:.2e}"
                  f"  top-1 agree {checks['top1_agreement']:.4f}")
        else:
            print(f"verify: {name:34s} log-mel max|diff| {checks['logmel_max_abs_diff_db']:.2e} dB")
        art["checks"] = checks

    if cfg.export.long_audio_minutes > 0:
        from pipeline.detect import long_audio_eval

        manifest["long_audio"] = long_audio_eval(cfg, run_dir, manifest, minutes=cfg.export.long_audio_minutes)
        la = manifest["long_audio"]
        print(f"verify: long audio ({la['minutes']} min, {la['keywords']} keywords): recall {la['recall']:.3f} at "
              f"{la['false_alarms_per_hour']:.1f} false alarms/hour (threshold {la['threshold']}) -> det_curve.png")
    manifest["verified"] = {"keras_test_accuracy": round(keras_accuracy, 6), "ok": not failures, "failures": failures,
                            "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = run_dir / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(run_dir / "manifest.json")
    if failures:
        raise VerificationError("verify failed: " + "; ".join(failures))
    print(f"verify: all {len(manifest['artifacts'])} artifacts within limits -> {run_dir / 'manifest.json'}")
    return run_dir / "manifest.json"
