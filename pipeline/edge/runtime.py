"""Running exported TFLite models the way a phone does: named tensors, one hop of audio at a time.

Needs numpy and a TFLite interpreter only (ai-edge-litert, tflite-runtime, or TensorFlow's own), so
this is the code an app, the live page (web/) and the README's Kotlin/Swift sketches mirror.

The streaming contract (``model_streaming.tflite``, or the split pair ``model_streaming_frontend.tflite``
+ ``model_streaming_int8.tflite``):
1. start from the zero state (``StreamGeometry.zero_state``);
2. per hop of ``hop`` samples: feed ``audio_hop`` [1, hop] and the state, get ``scores`` and ``new_*``;
3. the ``new_*`` outputs are the next hop's state inputs (tensors are matched by name, never position);
4. a 1-s window fed hop by hop from the zero state, then ``flush_hops`` hops of zeros, gives the 1-s
   model's scores on that window.
``model_continuous.tflite`` has the same tensors and steps 1-3; its weights are trained to be read at
any frame of one never-reset state (pipeline/continuous.py; detection.py's continuous design).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _interpreter_class():
    """The lightest TFLite interpreter installed: the standalone runtimes first, TensorFlow's last."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    import tensorflow as tf

    return tf.lite.Interpreter


class TFLiteModel:
    """A .tflite file called with a dict of inputs by signature name: ``model(inputs) -> outputs``.

    TFLite orders a signature's tensors by name, not in the order the model was written with, so
    inputs and outputs are always dicts keyed by name. Times every call (``seconds``, ``calls``).
    """

    def __init__(self, path: str | Path, *, threads: int = 1):
        self.path = Path(path)
        self.interpreter = _interpreter_class()(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_shapes = {name: tuple(d["shape"]) for name, d in self.runner.get_input_details().items()}
        self.seconds = 0.0
        self.calls = 0

    @property
    def ops(self) -> list[str]:
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def __call__(self, inputs: dict) -> dict:
        t0 = time.perf_counter()
        out = self.runner(**{name: np.asarray(value, np.float32) for name, value in inputs.items()})
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out

    @property
    def mean_latency_ms(self) -> float:
        return 1000 * self.seconds / max(1, self.calls)


@dataclass(frozen=True)
class StreamGeometry:
    """How a streaming model walks through audio; derived from the feature spec and the GRU sizes.

    With librosa's centring, frame t covers samples [t*hop - left, t*hop - left + win), so it is complete
    ``delay`` hops after the hop holding sample t*hop (2 for 10-ms hops and a 25-ms window). ``buffer``
    keeps the last ``buffer_len`` samples of context; ``warmup`` counts the first ``delay - 1`` hops, which
    complete no frame and leave the GRU states alone.
    """

    hop: int
    delay: int  # = flush_hops: zero hops that complete the last frames of a window
    buffer_len: int
    state_shapes: dict  # state input name -> shape (every input but audio_hop)

    @classmethod
    def from_spec(cls, spec, gru_units: list[int]) -> "StreamGeometry":
        """``spec``: a FeatureSpec or its dict (manifest.json's ``feature_spec``)."""
        get = spec.get if isinstance(spec, dict) else lambda key: getattr(spec, key)
        n_fft, win, hop = get("n_fft"), get("win_length"), get("hop_length")
        left = n_fft // 2 - (n_fft - win) // 2  # zeros before sample 0 (see pipeline/frontend.py)
        delay = -(-(win - left) // hop)  # ceil
        shapes = {"buffer": (1, delay * hop + left - hop), "warmup": (1, 1)}
        shapes.update({f"gru_{i}_state": (1, units) for i, units in enumerate(gru_units)})
        return cls(hop=hop, delay=delay, buffer_len=shapes["buffer"][1], state_shapes=shapes)

    @property
    def gru_state_names(self) -> list[str]:
        return [name for name in self.state_shapes if name.startswith("gru_")]

    def zero_state(self) -> dict[str, np.ndarray]:
        return {name: np.zeros(shape, np.float32) for name, shape in self.state_shapes.items()}


class SplitStreamingStep:
    """The split pair driven like the one-piece streaming model: ``step(inputs) -> outputs``.

    Per hop the float frontend turns audio into at most one log-mel frame (``ready`` says whether the hop
    completed one). Only then does the int8 network step run, update the GRU states and give scores;
    otherwise the states stay as they were and ``scores`` is None (the stream keeps its last scores).
    ``network`` may be any callable with the network step's inputs and outputs (export passes a float
    one that collects int8 calibration data), or None to run the frontend alone. With ``keep_frames``
    every frame computed is kept in ``frames`` (to check the frontend; off for long audio).
    """

    FRONTEND_INPUTS = ("audio_hop", "buffer", "warmup")

    def __init__(self, frontend, network, *, state_names: list[str], keep_frames: bool = False):
        self.frontend, self.network, self.state_names = frontend, network, state_names
        self.keep_frames, self.frames = keep_frames, []

    def __call__(self, inputs: dict) -> dict:
        front = self.frontend({name: inputs[name] for name in self.FRONTEND_INPUTS})
        out = {"new_buffer": front["new_buffer"], "new_warmup": front["new_warmup"]}
        out.update({f"new_{name}": inputs[name] for name in self.state_names})
        out["scores"] = None
        if front["ready"][0, 0] >= 1:
            if self.keep_frames:
                self.frames.append(np.asarray(front["logmel"])[0])
            if self.network is not None:
                net = self.network({"logmel": front["logmel"], **{name: inputs[name] for name in self.state_names}})
                out.update({f"new_{name}": net[f"new_{name}"] for name in self.state_names})
                out["scores"] = net["scores"]
        return out

    @property
    def seconds(self) -> float:
        return sum(getattr(m, "seconds", 0.0) for m in (self.frontend, self.network) if m is not None)


class Stream:
    """One streaming state walking through audio: the hop loop, written once.

    ``step`` is a ``TFLiteModel`` of ``model_streaming.tflite``, a ``SplitStreamingStep``, or anything
    with the same named inputs and outputs.
    """

    def __init__(self, step, geometry: StreamGeometry):
        self.step, self.geometry = step, geometry
        self.reset()

    def reset(self) -> None:
        self.state = self.geometry.zero_state()
        self.scores = None

    def push(self, hop_audio: np.ndarray) -> None:
        """Feed one hop [hop] float32 PCM; the state advances and ``scores`` holds the latest scores."""
        out = self.step(dict(self.state, audio_hop=np.asarray(hop_audio, np.float32)[None]))
        self.state = {name: np.asarray(out[f"new_{name}"]) for name in self.state}
        if out["scores"] is not None:
            self.scores = np.asarray(out["scores"])[0]

    def flush(self) -> np.ndarray:
        """The scores of everything pushed so far as one window: ``delay`` zero hops complete its last
        frames. Leaves the stream's own state untouched (scores of the window ending here)."""
        state, scores = dict(self.state), self.scores
        for _ in range(self.geometry.delay):
            self.push(np.zeros(self.geometry.hop, np.float32))
        flushed = self.scores
        self.state, self.scores = state, scores
        return flushed


def stream_clip(step, geometry: StreamGeometry, audio: np.ndarray) -> np.ndarray:
    """Scores [C] of one clip [S] fed hop by hop from the zero state, then flushed: equal to the 1-s
    model's scores on that clip."""
    stream = Stream(step, geometry)
    hop = geometry.hop
    for start in range(0, len(audio) - hop + 1, hop):
        stream.push(audio[start:start + hop])
    return stream.flush()
