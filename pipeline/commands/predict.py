"""./run predict MODEL FILE...: label and score per audio file.

MODEL is any artifact that the run's manifest.json lists (a .tflite file, the SavedModel folder) or the
run folder itself (its SavedModel). The manifest says what the artifact takes (features, audio, a
streaming hop); the split int8 streaming network is paired with its float frontend. The feature spec
and labels come from the run folder, so predict computes exactly the features the model was trained on.
Files may be any format soundfile reads, at any rate (resampled), stereo (mixed down). Clips longer than
the model's window are scored on their loudest window. A bad file is one line on stderr; the rest go on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.audio import AudioError, load_audio
from pipeline.edge.run_folder import RunFolder
from pipeline.edge.runtime import TFLiteModel, stream_clip
from pipeline.feature_spec import FeatureSpec, logmel


def loudest_window(audio: np.ndarray, length: int, hop: int) -> np.ndarray:
    """The ``length``-sample window with the most energy (zero-padded if the audio is shorter)."""
    if len(audio) <= length:
        return np.pad(audio, (0, length - len(audio)))
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(length), mode="valid")[::hop]
    start = int(np.argmax(energy)) * hop
    return audio[start:start + length]


class Predictor:
    """Scores 1-s clips with any exported artifact: ``predictor(audio [S]) -> scores [C]``."""

    def __init__(self, model: str | Path):
        model = Path(model)
        self.run = RunFolder.of(model)
        self.labels = self.run.labels
        self.spec = FeatureSpec.from_dict(self.run.feature_spec)
        self.artifact = self.run.artifact(model)
        self.streaming = self.artifact["variant"].startswith(("streaming", "continuous"))
        if self.artifact["kind"] == "saved_model":
            import tensorflow as tf

            self.saved = tf.saved_model.load(str(self.run.path / self.artifact["path"]))
        elif self.streaming:
            self.step = self.run.streaming_step(self.artifact)  # a clear error for the frontend alone
        else:
            self.model = TFLiteModel(self.run.path / self.artifact["path"])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        art = self.artifact
        if art["kind"] == "saved_model":
            import tensorflow as tf

            return self.saved.signatures["audio"](audio=tf.constant(audio[None]))["scores"].numpy()[0]
        if self.streaming:  # hop by hop from the zero state, then flushed
            return stream_clip(self.step, self.run.geometry, audio)
        if art["input"] == "audio":
            return self.model({"audio": audio[None]})["scores"][0]
        return self.model({"features": logmel(audio[None], self.spec)})["scores"][0]


def main(*, model: str, files: list[str], top_k: int = 1, as_json: bool = False) -> int:
    predictor = Predictor(model)
    top_k = max(1, min(top_k, len(predictor.labels)))
    failed = 0
    if not as_json:
        print(f"{'file':40s} {'label':12s} score")
    for name in files:
        try:
            audio = load_audio(name, sample_rate=predictor.spec.sample_rate)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        clip = loudest_window(audio, predictor.spec.clip_samples, predictor.spec.hop_length)
        scores = np.asarray(predictor(clip), np.float64)
        best = np.argsort(-scores)[:top_k]
        if as_json:
            print(json.dumps({"file": name, "label": predictor.labels[best[0]], "score": round(float(scores[best[0]]), 6),
                              "top_k": [{"label": predictor.labels[i], "score": round(float(scores[i]), 6)} for i in best]}))
        else:
            extra = "  " + ", ".join(f"{predictor.labels[i]} {scores[i]:.3f}" for i in best[1:]) if top_k > 1 else ""
            print(f"{name:40s} {predictor.labels[best[0]]:12s} {scores[best[0]]:.3f}{extra}")
    if failed:
        print(f"{failed} of {len(files)} files could not be read", file=sys.stderr)
    return 1 if failed == len(files) else 0
