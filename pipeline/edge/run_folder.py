"""An exported run folder as an app sees it: manifest.json (or export.json), labels.txt, and the
artifacts the manifest lists. Finds the artifact a path names and opens a streaming step for it."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.edge.runtime import SplitStreamingStep, StreamGeometry, TFLiteModel
from pipeline.errors import MissingInputError, PipelineError


def edge_step(model: TFLiteModel, art: dict, folder: Path, geometry: StreamGeometry, *, threads: int = 1):
    """A streaming artifact's step as the edge runtime runs it: ``model`` itself, or (an int8 network, whose
    manifest entry names its ``frontend``) ``model`` behind that float frontend."""
    if "frontend" not in art:
        return model
    return SplitStreamingStep(TFLiteModel(folder / art["frontend"], threads=threads), model,
                              state_names=geometry.gru_state_names)


class ArtifactError(PipelineError):
    """A model path that is not (or not alone) a usable artifact of its run."""


class RunFolder:
    def __init__(self, folder: Path):
        self.path = folder
        for name in ("manifest.json", "export.json"):
            if (folder / name).is_file() and (folder / "labels.txt").is_file():
                self.manifest = json.loads((folder / name).read_text())
                self.verified = name == "manifest.json"  # export.json: verify has not tuned the threshold yet
                self.labels = (folder / "labels.txt").read_text().split()
                break
        else:
            raise MissingInputError(f"{folder}: no manifest.json and labels.txt (use a model from an exports/<run>/ folder)")
        self.feature_spec = self.manifest["feature_spec"]
        self.geometry = StreamGeometry.from_spec(self.feature_spec, self.manifest["model"]["gru_units"])

    @classmethod
    def of(cls, model: Path) -> "RunFolder":
        """The run folder of a model file or folder (its own folder, or the one above a SavedModel)."""
        if not model.exists():
            raise MissingInputError(f"{model}: no such model file or folder")
        start = model if model.is_dir() else model.parent
        for folder in (start, start.parent):
            if (folder / "labels.txt").is_file():
                return cls(folder)
        return cls(start)  # raises, naming the folder

    def artifact(self, model: Path) -> dict:
        """The manifest's entry for a model path (a run folder means its SavedModel)."""
        if model.resolve() == self.path.resolve():
            model = self.path / "saved_model"
        for art in self.manifest["artifacts"]:
            if (self.path / art["path"]).resolve() == model.resolve():
                return art
        listed = ", ".join(a["path"] for a in self.manifest["artifacts"])
        raise ArtifactError(f"{model}: not an artifact listed in {self.path / 'manifest.json'} ({listed})")

    def streaming_step(self, art: dict, *, threads: int = 1):
        """A ``step(inputs) -> outputs`` for a streaming artifact: a one-piece model (the 1-s weights or the
        continuous design's), or an int8 network (either design's) paired with its float frontend."""
        if art["variant"] in ("streaming", "continuous", "streaming_int8", "continuous_int8"):
            return edge_step(TFLiteModel(self.path / art["path"], threads=threads), art, self.path, self.geometry,
                             threads=threads)
        if art["variant"] == "streaming_frontend":
            raise ArtifactError(f"{art['path']} computes log-mel frames only, no scores: use "
                                "model_streaming_int8.tflite or model_continuous_int8.tflite (they pair with this "
                                "frontend), or model_streaming.tflite")
        raise ArtifactError(f"{art['path']} is not a streaming model (use model_continuous.tflite, "
                            "model_continuous_int8.tflite, model_streaming.tflite or model_streaming_int8.tflite)")
