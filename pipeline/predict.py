"""./run predict MODEL FILE...: label and score per audio file.

MODEL is a .tflite file (features, audio or streaming input, told apart by its input names), a
SavedModel folder, or a run folder (its SavedModel). The feature spec and labels come from the
manifest beside the model, so predict computes exactly the features the model was trained on.
Files may be any format soundfile reads, at any rate (resampled), stereo (mixed down). Clips longer than
the model's window are scored on their loudest window. A bad file is one line on stderr; the rest go on.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.audio import AudioError, load_audio
from pipeline.feature_spec import FeatureSpec, logmel


def find_run_files(model: Path) -> tuple[dict, list[str]]:
    """The manifest (or export.json) and labels that describe a model file or folder."""
    for folder in (model if model.is_dir() else model.parent, (model if model.is_dir() else model.parent).parent):
        for name in ("manifest.json", "export.json"):
            if (folder / name).is_file() and (folder / "labels.txt").is_file():
                manifest = json.loads((folder / name).read_text())
                return manifest, (folder / "labels.txt").read_text().split()
    raise FileNotFoundError(f"{model}: no manifest.json and labels.txt beside it (use a file from an exports/<run>/ folder)")


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
        if not model.exists():
            raise FileNotFoundError(f"{model}: no such model file or folder")
        self.manifest, self.labels = find_run_files(model)
        self.spec = FeatureSpec.from_dict(self.manifest["feature_spec"])
        if model.is_dir() and not (model / "saved_model.pb").is_file():
            model = model / "saved_model"
        self.path = model
        if model.suffix == ".tflite":
            from pipeline.verify import TFLiteRunner

            self.runner = TFLiteRunner(model)
            names = set(self.runner.runner.get_input_details())
            self.input = "streaming" if "audio_hop" in names else "audio" if "audio" in names else "features"
        else:
            import tensorflow as tf

            self.saved = tf.saved_model.load(str(model))
            self.input = "saved_model"

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if self.input == "features":
            return self.runner({"features": logmel(audio[None], self.spec)})["scores"][0]
        if self.input == "audio":
            return self.runner({"audio": audio[None]})["scores"][0]
        if self.input == "streaming":
            from pipeline.export import StreamGeometry, stream_clip_numpy

            geometry = StreamGeometry.from_spec(self.spec, self.manifest["model"]["gru_units"])
            return stream_clip_numpy(self.runner, geometry, audio)
        import tensorflow as tf

        return self.saved.signatures["audio"](audio=tf.constant(audio[None]))["scores"].numpy()[0]


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
