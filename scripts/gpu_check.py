"""GPU check on the Keras torch backend: does the stacked GRU take cuDNN, and how much faster is it?

Runs where PyTorch is installed but TensorFlow need not be (it never imports tensorflow, and of the
pipeline only ``pipeline.model``). It builds the model with ``pipeline.model.build_model``, trains it on
random seeded data twice from the same initial weights, once with ``use_cudnn="auto"`` and once with
``use_cudnn=False``, and writes to ``--out``:

    report.json       device, versions, steps/s per mode and their ratio, whether cuDNN was taken
    auto.weights.h5   weights of the ``use_cudnn="auto"`` model after training
    false.weights.h5  weights of the ``use_cudnn=False`` model after training
    outputs.npz       x [parity_batch, frames, n_mels] and the class probabilities [parity_batch, classes]
                      of both trained models on it (TF32 off), for the TF-backend parity test

How keras >= 3.14 on torch picks cuDNN (keras/src/backend/torch/rnn.py): ``GRU.inner_loop`` calls
``backend.gru`` unless ``use_cudnn=False``; torch's ``gru`` calls ``_cudnn_gru`` (``torch._VF.gru``,
cuDNN on CUDA tensors) when the activations are tanh/sigmoid, use_bias, not unroll, the inputs are on
CUDA and nothing is tracing; a failure there is swallowed and it falls back to ``_fallback_gru`` (a
Python loop over time). ``use_cudnn=False`` skips both and runs the generic ``keras.ops.rnn`` loop.
This script wraps ``_cudnn_gru`` and ``_fallback_gru`` to count which one actually ran, and with
which input dtype.

``--dtype-policy mixed_float16`` sets keras' global policy before any model is built (float32 variables,
float16 compute; the GRU kernel then gets float16 tensors) and wraps Adam in
``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling). The report records the policy, the
optimizer, the final loss scale and the model's output dtype (``pipeline.model`` keeps the softmax in
float32).

    KERAS_BACKEND=torch python scripts/gpu_check.py --steps 300 --out /tmp/gpu_check
    KERAS_BACKEND=torch python scripts/gpu_check.py --dtype-policy mixed_float16 --out /tmp/gpu_check_mixed
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.model import build_model  # noqa: E402

PARITY_SEED = 1234
PARITY_BATCH = 8
DTYPE_POLICIES = ("float32", "mixed_float16")


class PathCounter:
    """Counts calls into keras' torch GRU kernels (cuDNN and the pure-torch fallback)."""

    def __init__(self) -> None:
        self.counts = {"cudnn_gru_ok": 0, "cudnn_gru_failed": 0}
        self.dtypes: dict[str, int] = {}  # "<kernel>:<input dtype>" -> calls
        self.last_dtypes: dict[str, int] = {}
        try:  # (attribute access would give the function keras.src.backend.torch.rnn, not the module)
            torch_rnn = importlib.import_module("keras.src.backend.torch.rnn")
        except ImportError:  # another keras layout: counting is not possible
            self.module = None
            return
        self.module = torch_rnn
        if not hasattr(torch_rnn, "_cudnn_gru") or not hasattr(torch_rnn, "_fallback_gru"):
            self.module = None
            return
        cudnn_gru, fallback_gru = torch_rnn._cudnn_gru, torch_rnn._fallback_gru

        def note_dtype(kernel: str, inputs) -> None:
            key = f"{kernel}:{str(getattr(inputs, 'dtype', '?')).replace('torch.', '')}"
            self.dtypes[key] = self.dtypes.get(key, 0) + 1

        def counted_cudnn_gru(*args, **kwargs):
            note_dtype("cudnn_gru", args[0] if args else kwargs.get("inputs"))
            try:
                out = cudnn_gru(*args, **kwargs)
            except Exception as error:  # keras swallows it and falls back; keep the first for the report
                self.counts["cudnn_gru_failed"] += 1
                self.counts.setdefault("cudnn_gru_first_error", repr(error)[:300])
                raise
            self.counts["cudnn_gru_ok"] += 1
            return out

        def counted_fallback_gru(inputs, *args, **kwargs):
            # keras also runs layers on "meta" tensors to infer shapes; count those apart
            key = f"fallback_gru_{getattr(inputs, 'device', torch.device('cpu')).type}"
            self.counts[key] = self.counts.get(key, 0) + 1
            note_dtype(key, inputs)
            return fallback_gru(inputs, *args, **kwargs)

        torch_rnn._cudnn_gru = counted_cudnn_gru
        torch_rnn._fallback_gru = counted_fallback_gru

    def take(self) -> dict[str, int] | None:
        """The counts since the last call (None when keras' layout is unknown), then reset.

        The input dtypes per kernel over the same calls are left in ``last_dtypes``.
        """
        self.last_dtypes, self.dtypes = dict(self.dtypes), {}
        if self.module is None:
            return None
        counts = dict(self.counts)
        self.counts = {"cudnn_gru_ok": 0, "cudnn_gru_failed": 0}
        return counts


def sync() -> None:
    """Wait for queued GPU work, so wall-clock timings are honest."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TimeBudget(keras.callbacks.Callback):
    """Stops ``fit`` once ``max_seconds`` have passed; counts the steps run."""

    def __init__(self, *, max_seconds: float) -> None:
        super().__init__()
        self.max_seconds = max_seconds
        self.steps = 0
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if time.perf_counter() - self.start > self.max_seconds:
            self.model.stop_training = True


def model_kwargs(args: argparse.Namespace) -> dict:
    """The build_model arguments (minus use_cudnn); recorded in the report so others can rebuild it."""
    return {"num_frames": args.frames, "n_mels": args.mels, "num_classes": args.classes,
            "gru_units": list(args.units), "dense_units": args.dense_units, "dropout": 0.1}


def make_model(*, kwargs: dict, use_cudnn: bool | str, seed: int, compiled: bool = True) -> keras.Model:
    """The model (compiled for training); the same seed gives the same initial weights in every mode."""
    keras.utils.set_random_seed(seed)
    model = build_model(**kwargs, use_cudnn=use_cudnn)
    if compiled:
        optimizer = keras.optimizers.Adam(1e-3)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            # dynamic loss scaling: float16 gradients of a small loss underflow without it
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def precision_info(model: keras.Model) -> dict:
    """What the dtype policy did to this model: policies, output dtype, optimizer and loss scale."""
    optimizer = getattr(model, "optimizer", None)
    info = {"model_dtype_policy": model.dtype_policy.name,
            "output_dtype": str(keras.backend.standardize_dtype(model.outputs[0].dtype)),
            "layer_compute_dtypes": {layer.name: layer.compute_dtype for layer in model.layers
                                     if isinstance(layer, (keras.layers.GRU, keras.layers.Dense))},
            "variable_dtypes": sorted({str(v.dtype) for v in model.weights})}
    if optimizer is not None:
        info["optimizer"] = type(optimizer).__name__
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            info["inner_optimizer"] = type(optimizer.inner_optimizer).__name__
            info["final_loss_scale"] = float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))
    return info


def save_model_weights(model: keras.Model, path: Path, *, kwargs: dict) -> None:
    """Saves the layer weights only (a compiled model's .weights.h5 also holds the optimizer state)."""
    plain = make_model(kwargs=kwargs, use_cudnn=False, seed=0, compiled=False)
    plain.set_weights(model.get_weights())
    plain.save_weights(path)


def train(*, model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int, batch_size: int,
          warmup_steps: int, max_seconds: float) -> dict:
    """Trains ``warmup_steps`` untimed, then up to ``steps`` timed steps.

    x: [n, frames, n_mels] float32, y: [n] int; batches cycle through the n examples.
    """
    def fit(n_steps: int, callbacks: list) -> keras.callbacks.History:
        idx = np.arange(n_steps * batch_size) % len(x)
        return model.fit(x[idx], y[idx], batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                         callbacks=callbacks)

    fit(warmup_steps, [])
    sync()
    budget = TimeBudget(max_seconds=max_seconds)
    start = time.perf_counter()
    history = fit(steps, [budget])
    sync()
    seconds = time.perf_counter() - start
    return {"steps": budget.steps, "seconds": round(seconds, 3),
            "steps_per_s": round(budget.steps / seconds, 3),
            "samples_per_s": round(budget.steps * batch_size / seconds, 1),
            "final_loss": float(history.history["loss"][-1]),
            "stopped_by_time_budget": budget.steps < steps}


def predict_probs(model: keras.Model, x: np.ndarray, *, tf32: bool) -> np.ndarray:
    """Class probabilities [batch, classes] with TF32 (cuDNN RNN and matmul) on or off."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        return np.asarray(model.predict(x, batch_size=len(x), verbose=0), np.float32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def device_info() -> dict:
    """What ran it: device name and library versions."""
    from keras.src.backend.torch.core import get_device

    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or 'x86_64'})",
            "keras_torch_device": str(get_device()),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
            "cudnn_rnn_fp32_precision": getattr(getattr(torch.backends.cudnn, "rnn", None), "fp32_precision", None),
            "keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "numpy": np.__version__, "python": platform.python_version()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="timed training steps per mode")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--units", type=int, nargs="+", default=[128, 128], help="GRU units per layer")
    p.add_argument("--dense-units", type=int, default=64)
    p.add_argument("--frames", type=int, default=101)
    p.add_argument("--mels", type=int, default=40)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--max-seconds", type=float, default=120.0, help="time budget per mode's timed fit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype-policy", choices=DTYPE_POLICIES, default="float32",
                   help="keras global dtype policy; mixed_float16 also wraps Adam in LossScaleOptimizer")
    p.add_argument("--out", type=Path, required=True, help="folder for report.json, weights, outputs.npz")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if keras.backend.backend() != "torch":
        sys.exit(f"run with KERAS_BACKEND=torch (got {keras.backend.backend()!r})")
    args.out.mkdir(parents=True, exist_ok=True)
    keras.mixed_precision.set_global_policy(args.dtype_policy)  # before any model is built
    counter = PathCounter()
    kwargs = model_kwargs(args)

    rng = np.random.default_rng(args.seed)
    n_train = 16 * args.batch_size
    x = rng.standard_normal((n_train, args.frames, args.mels), dtype=np.float32)
    y = rng.integers(0, args.classes, n_train)
    x_parity = np.random.default_rng(PARITY_SEED).standard_normal(
        (PARITY_BATCH, args.frames, args.mels), dtype=np.float32)

    report = {**device_info(), "batch_size": args.batch_size, "steps": args.steps,
              "warmup_steps": args.warmup_steps, "seed": args.seed,
              "dtype_policy": keras.mixed_precision.global_policy().name, "model": kwargs, "modes": {}}
    models, outputs = {}, {"x": x_parity}
    for name, use_cudnn in (("auto", "auto"), ("false", False)):
        model = make_model(kwargs=kwargs, use_cudnn=use_cudnn, seed=args.seed)
        counter.take()
        result = train(model=model, x=x, y=y, steps=args.steps, batch_size=args.batch_size,
                       warmup_steps=args.warmup_steps, max_seconds=args.max_seconds)
        result["kernel_calls"] = counts = counter.take()
        result["kernel_input_dtypes"] = counter.last_dtypes
        result["cudnn_path_taken"] = None if counts is None else (
            counts["cudnn_gru_ok"] > 0 and counts["cudnn_gru_failed"] == 0
            and not counts.get("fallback_gru_cuda") and not counts.get("fallback_gru_cpu"))
        result.update(precision_info(model))
        save_model_weights(model, args.out / f"{name}.weights.h5", kwargs=kwargs)
        outputs[f"probs_{name}"] = predict_probs(model, x_parity, tf32=False)
        if name == "auto":
            tf32 = predict_probs(model, x_parity, tf32=True)
            result["max_abs_diff_tf32_vs_fp32_outputs"] = float(np.abs(tf32 - outputs["probs_auto"]).max())
        counter.take()
        report["modes"][name] = result
        models[name] = model
        print(f"{name:>5}: {result['steps']} steps, {result['steps_per_s']:.2f} steps/s, "
              f"kernel calls {counts}, input dtypes {result['kernel_input_dtypes']}, "
              f"output {result['output_dtype']}", flush=True)

    # Same trained weights through the generic loop: how close is cuDNN to the reference loop here?
    generic = make_model(kwargs=kwargs, use_cudnn=False, seed=args.seed, compiled=False)
    generic.set_weights(models["auto"].get_weights())
    outputs["probs_auto_weights_generic_loop"] = predict_probs(generic, x_parity, tf32=False)
    report["max_abs_diff_cudnn_vs_generic_loop_outputs"] = float(
        np.abs(outputs["probs_auto_weights_generic_loop"] - outputs["probs_auto"]).max())

    report["speedup_auto_over_false"] = round(
        report["modes"]["auto"]["steps_per_s"] / report["modes"]["false"]["steps_per_s"], 2)
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    np.savez(args.out / "outputs.npz", **outputs)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2), flush=True)
    return report


if __name__ == "__main__":
    main()
