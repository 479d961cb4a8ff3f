"""Export stage: SavedModel and TFLite models, plus labels.txt and manifest.json.

Every export starts from the trained weights loaded into a model rebuilt with ``use_cudnn=False``: a
graph traced while a GPU is visible would contain CudnnRNNV3, which CPU and TFLite can't run
(docs/tflite_conversion.md).

Artifacts (all TFLite ones are builtin ops only, static batch 1):
    saved_model/                 signatures "features" [B, T, M] and "audio" [B, S], batch-flexible
    model_float32.tflite         features input (WHILE-op GRU)
    model_audio_float32.tflite   raw 1-s audio input, the librosa-exact log-mel frontend in the graph;
                                 outputs scores and the log-mel it computed (to check against librosa)
    model_dynamic_range.tflite   int8 weights, float activations
    model_int8.tflite            full integer (unrolled GRU: the WHILE-op GRU crashes the int8 converter)
    model_streaming.tflite       one 10-ms hop of audio + state in, scores + new state out
    model_streaming_frontend.tflite + model_streaming_int8.tflite
                                 the same split in two: float frontend (hop -> log-mel frame), full-int8
                                 network step (frame + GRU states -> scores + states)
    model_continuous.tflite      with model_continuous.keras (train.continuous_sequences > 0): the same
                                 streaming step with the continuous design's weights, the run's detector
The export-only model variants (audio frontend, unrolled, streaming step) live here, not in model.py.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.audio import AudioError
from pipeline.config import Config
from pipeline.dataset import load_clip, load_split, load_stats, read_rows
from pipeline.edge.detection import DetectionParams
from pipeline.edge.runtime import SplitStreamingStep, Stream, StreamGeometry, TFLiteModel, stream_clip
from pipeline.errors import StageError
from pipeline.feature_spec import FeatureSpec
from pipeline.frontend import clip_logmel, frames_logmel
from pipeline.io import tree_bytes, tree_sha256

CUDNN_OP_TYPES = ("CudnnRNN", "CudnnRNNV2", "CudnnRNNV3")


# ---- models ----------------------------------------------------------------------------------

def inference_model(cfg: Config, *, unroll: bool = False):
    """The trained weights in a model rebuilt with use_cudnn=False (and optionally an unrolled GRU)."""
    import keras

    from pipeline.model import build_from_config

    trained = keras.models.load_model(cfg.run_dir / "model.keras", compile=False)
    model = build_from_config(cfg, load_stats(cfg.features_dir), use_cudnn=False, unroll=unroll)
    model.set_weights(trained.get_weights())
    return model


def _write_archive(path: Path, model, endpoints: dict) -> None:
    """SavedModel with named endpoints {name: (fn, [TensorSpec, ...])}."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name=name, fn=fn, input_signature=signature)
    archive.write_out(str(path), verbose=False)


def serving_functions(model, spec: FeatureSpec):
    """The two endpoints every export serves: features -> scores, and audio -> scores + the log-mel it computed."""

    def on_features(features):
        return {"scores": model(features, training=False)}

    def on_audio(audio):
        logmel = clip_logmel(audio, spec)
        return {"scores": model(logmel, training=False), "logmel": logmel}

    return on_features, on_audio


def export_saved_model(model, spec: FeatureSpec, path: Path) -> None:
    """Batch-flexible SavedModel with 'features' (also serving_default) and 'audio' signatures."""
    import tensorflow as tf

    features_sig = [tf.TensorSpec([None, spec.num_frames, spec.n_mels], tf.float32, name="features")]
    audio_sig = [tf.TensorSpec([None, spec.clip_samples], tf.float32, name="audio")]

    on_features, on_audio = serving_functions(model, spec)

    _write_archive(path, model, {"serving_default": (on_features, features_sig), "features": (on_features, features_sig),
                                 "audio": (on_audio, audio_sig)})


def convert_tflite(model, fn, signature: list, path: Path, *, optimize: str | None = None,
                   representative=None) -> None:
    """Static-batch SavedModel -> TFLite with builtin ops only (dynamic batch would need Flex ops)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        _write_archive(Path(tmp) / "sm", model, {"serving_default": (fn, signature)})
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "sm"), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if optimize in ("dynamic_range", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if optimize == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        blob = converter.convert()
    tmp_path = path.with_name(path.name + ".part")
    tmp_path.write_bytes(blob)
    tmp_path.replace(path)


class StreamingStep:
    """One hop of audio + state -> scores + new state, from the trained weights (export-only variant)."""

    def __init__(self, model, spec: FeatureSpec):
        self.model, self.spec = model, spec
        self.grus = [layer for layer in model.layers if layer.name.startswith("gru_")]
        self.geometry = StreamGeometry.from_spec(spec, [layer.units for layer in self.grus])
        self.hop, self.delay, self.buffer_len = self.geometry.hop, self.geometry.delay, self.geometry.buffer_len
        self.state_names = [f"{layer.name}_state" for layer in self.grus]

    def input_specs(self) -> dict:
        import tensorflow as tf

        specs = {"audio_hop": tf.TensorSpec([1, self.hop], tf.float32, name="audio_hop"),
                 "buffer": tf.TensorSpec([1, self.buffer_len], tf.float32, name="buffer"),
                 "warmup": tf.TensorSpec([1, 1], tf.float32, name="warmup")}
        for layer, name in zip(self.grus, self.state_names):
            specs[name] = tf.TensorSpec([1, layer.units], tf.float32, name=name)
        return specs

    def frontend(self, audio_hop, buffer, warmup) -> dict:
        """Audio hop + sample buffer -> the log-mel frame this hop completes [1, M], and whether it is real."""
        import tensorflow as tf

        spec = self.spec
        context = tf.concat([buffer, audio_hop], axis=1)  # [1, buffer_len + hop]
        return {"logmel": frames_logmel(context[:, :spec.win_length], spec),  # the same frontend as the 1-s model
                "ready": tf.cast(warmup >= self.delay - 1, tf.float32),  # [1, 1]: does this hop complete a frame?
                "new_buffer": context[:, self.hop:],
                "new_warmup": tf.minimum(warmup + 1.0, float(self.delay - 1))}

    def network(self, logmel, **states) -> dict:
        """One log-mel frame [1, M] + GRU states -> scores + new GRU states (the cuDNN GRU equations)."""
        import tensorflow as tf

        norm = self.model.get_layer("normalize")
        mean = tf.reshape(tf.convert_to_tensor(norm.mean), [1, -1])
        std = tf.maximum(tf.sqrt(tf.reshape(tf.convert_to_tensor(norm.variance), [1, -1])), 1e-7)  # as keras
        x = (logmel - mean) / std
        outputs = {}
        for layer, name in zip(self.grus, self.state_names):
            h = states[name]
            kernel, recurrent, bias = (w.value for w in (layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias))
            x_z, x_r, x_h = tf.split(tf.matmul(x, kernel) + bias[0], 3, axis=1)
            h_z, h_r, h_h = tf.split(tf.matmul(h, recurrent) + bias[1], 3, axis=1)
            z = tf.sigmoid(x_z + h_z)
            r = tf.sigmoid(x_r + h_r)
            candidate = tf.tanh(x_h + r * h_h)  # reset gate after the recurrent matmul (reset_after=True)
            x = outputs[f"new_{name}"] = z * h + (1.0 - z) * candidate
        outputs["scores"] = self.model.get_layer("scores")(self.model.get_layer("dense")(x))
        return outputs

    def __call__(self, audio_hop, buffer, warmup, **states) -> dict:
        front = self.frontend(audio_hop, buffer, warmup)
        net = self.network(front["logmel"], **states)
        ready = front["ready"]
        outputs = {"new_buffer": front["new_buffer"], "new_warmup": front["new_warmup"], "scores": net["scores"]}
        for name in self.state_names:  # a hop that completes no frame leaves the GRU states alone
            outputs[f"new_{name}"] = ready * net[f"new_{name}"] + (1.0 - ready) * states[name]
        return outputs

    def network_specs(self) -> dict:
        import tensorflow as tf

        specs = {"logmel": tf.TensorSpec([1, self.spec.n_mels], tf.float32, name="logmel")}
        specs.update({name: spec for name, spec in self.input_specs().items() if name.endswith("_state")})
        return specs

    def tf_fn(self):
        """A single-argument function (dict of inputs) for ExportArchive."""
        return lambda inputs: self(**inputs)


# ---- the stage -------------------------------------------------------------------------------

def graph_op_types(saved_model_dir: Path) -> set[str]:
    """Every op type in a SavedModel's graphs and functions (to prove no CudnnRNN* is in it)."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta in sm.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


def representative_examples(cfg: Config, count: int) -> np.ndarray:
    """Clean training features for int8 calibration, float32 [count, T, M], seeded pick."""
    feats, _, rows = load_split(cfg.features_dir, "train")
    rng = np.random.default_rng(cfg.run.seed)
    idx = np.sort(rng.choice(rows, size=min(count, len(rows)), replace=False))
    return np.asarray(feats[0, idx], np.float32)


def run(cfg: Config) -> Path:
    import tensorflow as tf

    t0 = time.time()
    run_dir = cfg.run_dir
    spec = FeatureSpec.from_config(cfg)
    model = inference_model(cfg)
    out = run_dir / "export.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    artifacts = []

    def add(kind: str, variant: str, input_kind: str, name: str, **extra):
        path = out / name
        artifacts.append({"kind": kind, "variant": variant, "input": input_kind, "path": name, "bytes": tree_bytes(path),
                          "sha256": tree_sha256(path), "checks": {}, **extra})
        print(f"export: {name} ({tree_bytes(path) / 1024:.0f} KB)")

    export_saved_model(model, spec, out / "saved_model")
    cudnn_ops = sorted(graph_op_types(out / "saved_model") & set(CUDNN_OP_TYPES))
    if cudnn_ops:
        raise StageError(f"export: SavedModel graph contains {cudnn_ops}; CPU/TFLite can't run it (rebuild with "
                         "use_cudnn=False failed; see docs/tflite_conversion.md)")
    add("saved_model", "float32", "features", "saved_model", signatures=["features", "audio"],
        io={"features": {"inputs": {"features": [-1, spec.num_frames, spec.n_mels]}, "outputs": {"scores": [-1, len(cfg.labels)]}},
            "audio": {"inputs": {"audio": [-1, spec.clip_samples]},
                      "outputs": {"scores": [-1, len(cfg.labels)], "logmel": [-1, spec.num_frames, spec.n_mels]}}})

    features_sig = [tf.TensorSpec([1, spec.num_frames, spec.n_mels], tf.float32, name="features")]
    audio_sig = [tf.TensorSpec([1, spec.clip_samples], tf.float32, name="audio")]

    on_features, on_audio = serving_functions(model, spec)

    feature_io = {"inputs": {"features": [1, spec.num_frames, spec.n_mels]}, "outputs": {"scores": [1, len(cfg.labels)]}}
    convert_tflite(model, on_features, features_sig, out / "model_float32.tflite")
    add("tflite", "float32", "features", "model_float32.tflite", io=feature_io)
    convert_tflite(model, on_audio, audio_sig, out / "model_audio_float32.tflite")
    add("tflite", "float32", "audio", "model_audio_float32.tflite",
        io={"inputs": {"audio": [1, spec.clip_samples]},
            "outputs": {"scores": [1, len(cfg.labels)], "logmel": [1, spec.num_frames, spec.n_mels]}})
    convert_tflite(model, on_features, features_sig, out / "model_dynamic_range.tflite", optimize="dynamic_range")
    add("tflite", "dynamic_range", "features", "model_dynamic_range.tflite", io=feature_io)

    calibration = representative_examples(cfg, cfg.export.int8_calibration_examples)
    unrolled = inference_model(cfg, unroll=True)

    def on_features_unrolled(features):
        return {"scores": unrolled(features, training=False)}

    def representative():
        for example in calibration:
            yield [example[None]]

    convert_tflite(unrolled, on_features_unrolled, features_sig, out / "model_int8.tflite", optimize="int8",
                   representative=representative)
    add("tflite", "int8", "features", "model_int8.tflite", io=feature_io)

    step = StreamingStep(model, spec)
    step_specs = step.input_specs()
    stream_io = {"inputs": {name: list(s.shape) for name, s in step_specs.items()},
                 "outputs": {"scores": [1, len(cfg.labels)], **{f"new_{n}": list(s.shape) for n, s in step_specs.items()
                                                               if n != "audio_hop"}},
                 "hop_samples": step.hop, "flush_hops": step.delay,
                 "usage": "start from all-zero state; per hop feed audio_hop and the previous call's new_* outputs "
                          "as the state inputs; scores after a clip plus flush_hops zero hops equal the 1-s model's"}
    convert_tflite(model, step.tf_fn(), [step_specs], out / "model_streaming.tflite")
    add("tflite", "streaming", "audio", "model_streaming.tflite", io=stream_io)

    # Full-int8 streaming: an int8 power spectrum would lose its ~100 dB range, so the frontend stays a
    # small float model (like a device's DSP frontend) and the network step is full integer.
    frontend_specs = {n: step_specs[n] for n in ("audio_hop", "buffer", "warmup")}
    convert_tflite(model, lambda inputs: step.frontend(**inputs), [frontend_specs], out / "model_streaming_frontend.tflite")
    add("tflite", "streaming_frontend", "audio", "model_streaming_frontend.tflite",
        io={"inputs": {n: list(s.shape) for n, s in frontend_specs.items()},
            "outputs": {"logmel": [1, spec.n_mels], "ready": [1, 1], "new_buffer": [1, step.buffer_len], "new_warmup": [1, 1]},
            "hop_samples": step.hop, "flush_hops": step.delay,
            "usage": "per hop: feed audio_hop + previous new_buffer/new_warmup; when ready == 1, feed logmel to "
                     "model_streaming_int8.tflite (or model_continuous_int8.tflite) with its previous "
                     "new_gru_*_state outputs"})
    calibration_steps = streaming_calibration(step, out / "model_streaming_frontend.tflite", cfg,
                                              count=cfg.export.int8_calibration_examples)
    network_specs = step.network_specs()
    network_io = {"inputs": {n: list(s.shape) for n, s in network_specs.items()},  # both int8 networks' tensors
                  "outputs": {"scores": [1, len(cfg.labels)], **{f"new_{n}": list(s.shape) for n, s in network_specs.items()
                                                                 if n.endswith("_state")}}}
    convert_tflite(model, lambda inputs: step.network(**inputs), [network_specs], out / "model_streaming_int8.tflite",
                   optimize="int8", representative=lambda: iter(calibration_steps))
    add("tflite", "streaming_int8", "features", "model_streaming_int8.tflite",
        frontend="model_streaming_frontend.tflite",
        io={**network_io,
            "usage": "one log-mel frame from model_streaming_frontend.tflite per ready hop, plus the GRU states"})

    design = "staggered"
    if (run_dir / "model_continuous.keras").is_file():  # the always-on design (pipeline/continuous.py)
        import keras

        design = "continuous"
        continuous = StreamingStep(keras.models.load_model(run_dir / "model_continuous.keras", compile=False), spec)
        convert_tflite(continuous.model, continuous.tf_fn(), [step_specs], out / "model_continuous.tflite")
        add("tflite", "continuous", "audio", "model_continuous.tflite",
            io={**stream_io, "usage": "the continuous detector's model: start from all-zero state and never reset it; "
                                      "per hop feed audio_hop and the previous call's new_* outputs; scores are "
                                      "those of the last completed log-mel frame (manifest detection)"})
        # and its full-int8 network step, behind the same float frontend as model_streaming_int8.tflite
        calibration_steps = streaming_calibration(continuous, out / "model_streaming_frontend.tflite", cfg,
                                                  count=cfg.export.int8_calibration_examples, never_reset=True)
        convert_tflite(continuous.model, lambda inputs: continuous.network(**inputs), [network_specs],
                       out / "model_continuous_int8.tflite", optimize="int8", representative=lambda: iter(calibration_steps))
        add("tflite", "continuous_int8", "features", "model_continuous_int8.tflite",
            frontend="model_streaming_frontend.tflite",
            io={**network_io,
                "usage": "the continuous detector's network in full int8: one log-mel frame from "
                         "model_streaming_frontend.tflite per ready hop, plus the GRU states, never reset"})

    (out / "labels.txt").write_text("".join(label + "\n" for label in cfg.labels))
    manifest = {
        "run": cfg.run.name, "labels": cfg.labels, "feature_spec": spec.to_dict(),
        "metrics": json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {},
        "model": json.loads((run_dir / "train_summary.json").read_text()).get("model_args", {}),
        "parameters": int(model.count_params()), "artifacts": artifacts, "config": cfg.to_dict(),
        # the default detection parameters; verify tunes the threshold on long audio
        "detection": DetectionParams(design=design).to_manifest(geometry=step.geometry, window_samples=spec.clip_samples,
                                                                sample_rate=spec.sample_rate),
    }
    (out / "export.json").write_text(json.dumps(manifest, indent=1))
    publish(out, run_dir)
    print(f"export: {len(artifacts)} artifacts in {time.time() - t0:.0f} s -> {run_dir / 'export.json'} "
          "(verify adds the checks, writes manifest.json)")
    return run_dir / "export.json"


class _RecordingNetwork:
    """The float network step (TF) that keeps a random ``keep`` share of the inputs it meets: real
    (log-mel frame, GRU states) pairs, for the int8 network's calibration."""

    def __init__(self, step: StreamingStep, *, keep: float, rng: np.random.Generator):
        import tensorflow as tf

        self.fn = tf.function(lambda inputs: step.network(**inputs))
        self.keep, self.rng, self.examples = keep, rng, []

    def __call__(self, inputs: dict) -> dict:
        if self.rng.random() < self.keep:
            self.examples.append({name: np.array(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in self.fn(inputs).items()}


def streaming_calibration(step: StreamingStep, frontend_path: Path, cfg: Config, *, count: int,
                          never_reset: bool = False) -> list[dict]:
    """Representative inputs of the int8 network step, met while streaming training clips through the
    exported float frontend and the float network (the edge runtime's hop loop): each clip from the zero
    state, or (``never_reset``, the continuous design) all of them back to back through one state, so the
    states are those of a stream that has listened for minutes."""
    rows = read_rows(cfg.prepared_dir, "train")
    rng = np.random.default_rng(cfg.run.seed)
    per_clip = 2 if never_reset else 10  # of the clip's frames: one long stream needs more clips to be long
    network = _RecordingNetwork(step, keep=per_clip / step.spec.num_frames, rng=rng)
    split = SplitStreamingStep(TFLiteModel(frontend_path), network, state_names=step.geometry.gru_state_names)
    stream, hop = Stream(split, step.geometry), step.geometry.hop  # never_reset: the one state every clip goes through
    skipped = 0
    for i in rng.choice(len(rows), size=min(max(1, count // per_clip), len(rows)), replace=False):
        try:
            audio = load_clip(rows[i], step.spec)
        except AudioError:
            skipped += 1
            continue
        if never_reset:
            for start in range(0, len(audio) - hop + 1, hop):
                stream.push(audio[start:start + hop])
        else:
            stream_clip(split, step.geometry, audio)
    if skipped:
        print(f"export: {skipped} unreadable training clips left out of the int8 calibration")
    if not network.examples:
        raise StageError(f"export: no readable training clips in {cfg.prepared_dir} to calibrate the int8 streaming model")
    return network.examples


def publish(staging: Path, run_dir: Path) -> None:
    """Move staged exports into the run folder; export.json goes last, so it only names complete files.
    The old manifest.json goes first: it described the previous artifacts."""
    (run_dir / "manifest.json").unlink(missing_ok=True)
    (run_dir / "export.json").unlink(missing_ok=True)
    for old in run_dir.glob("model_*.tflite"):  # a model this export no longer makes (say, the continuous one)
        if not (staging / old.name).exists():
            old.unlink()
    for item in sorted(staging.iterdir(), key=lambda p: p.name == "export.json"):
        target = run_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    staging.rmdir()
