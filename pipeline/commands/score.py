"""./run score MODEL_OR_RUN DATA: how a model does on your own recordings.

DATA is a folder of ``WORD/<clip>`` (the dataset's layout; any format soundfile reads, any rate) or a
CSV file with the header ``path,label`` (paths relative to the CSV's folder, or absolute). Words that
are not model labels count as ``_unknown_`` (when the model has that label; otherwise they are left
out), ``_background_noise_`` is ignored. Each clip is scored on its loudest 1-s window, as predict does,
with any artifact of a run folder (``pipeline.commands.predict.Predictor``).

Prints accuracy, keyword accuracy (rows whose label is a word, not ``_unknown_``/``_silence_``),
unknown-word rejection (share of ``_unknown_`` rows predicted ``_unknown_``) and a per-class table;
writes ``score.json`` (the same, per-class metrics, the confusion matrix, every file's prediction) and
``confusion_matrix.png`` into ``--out`` (default ``<DATA>_score/``). A file that can't be read is one
``error:`` line naming it; the rest go on.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.audio import AudioError, load_audio
from pipeline.commands.predict import Predictor, loudest_window
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL
from pipeline.errors import MissingInputError, PipelineError
from pipeline.io import write_json_atomic
from pipeline.stages.evaluate import classification_metrics, plot_confusion_matrix

IGNORED_FOLDERS = ("_background_noise_",)


class ScoreInputError(PipelineError, ValueError):
    """DATA holds nothing to score, or its CSV is malformed (one line naming the file)."""


def _audio_suffixes() -> set[str]:
    import soundfile as sf

    # libsndfile's format names are also their usual extensions (WAV, FLAC, OGG, MP3, AIFF, ...)
    return {"." + name.lower() for name in sf.available_formats()} | {".wav", ".flac", ".ogg", ".mp3", ".aif"}


def collect(data: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(path, label) of every clip in a ``WORD/<clip>`` folder or a ``path,label`` CSV, and the ignored
    folder names. Raises MissingInputError for a missing path, ScoreInputError for nothing to score."""
    if not data.exists():
        raise MissingInputError(f"{data}: no such folder or CSV file")
    ignored: list[str] = []
    rows = []
    if data.is_dir():
        suffixes = _audio_suffixes()
        for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name in IGNORED_FOLDERS:
                ignored.append(folder.name)
                continue
            rows += [(f, folder.name) for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in suffixes]
    else:
        try:
            with open(data, newline="") as fh:
                reader = csv.DictReader(fh)
                header, table = reader.fieldnames or [], list(reader)
        except (UnicodeDecodeError, csv.Error, OSError) as e:
            raise ScoreInputError(f"{data}: not a readable CSV file ({e})") from None
        if not {"path", "label"} <= set(header):
            raise ScoreInputError(f"{data}: expected a CSV with the header path,label (got {','.join(header)})")
        for line, row in enumerate(table, start=2):
            if not row["path"] or not row["label"]:
                raise ScoreInputError(f"{data}: line {line} has an empty path or label")
            path = Path(row["path"].strip()).expanduser()
            rows.append((path if path.is_absolute() else data.parent / path, row["label"].strip()))
        ignored = sorted({label for _, label in rows if label in IGNORED_FOLDERS})
        rows = [(path, label) for path, label in rows if label not in IGNORED_FOLDERS]
    if not rows:
        raise ScoreInputError(f"{data}: no audio clips to score (expected WORD/<clip>.wav folders or a CSV with "
                              "the header path,label)")
    return rows, ignored


def label_mapping(names: list[str], labels: list[str]) -> dict[str, str | None]:
    """Each word of the data -> the model label it counts as: itself, _unknown_, or None (not scorable)."""
    fallback = UNKNOWN_LABEL if UNKNOWN_LABEL in labels else None
    return {name: name if name in labels else fallback for name in sorted(set(names))}


def describe_mapping(mapping: dict[str, str | None], ignored: list[str]) -> str:
    """One line: which words are model labels, which count as _unknown_, which are left out or ignored."""
    same = [n for n, m in mapping.items() if m == n]
    unknown = [n for n, m in mapping.items() if m is not None and m != n]
    dropped = [n for n, m in mapping.items() if m is None]
    parts = []
    if same:
        parts.append(", ".join(same) + ": model labels")
    if unknown:
        parts.append(", ".join(unknown) + f" -> {UNKNOWN_LABEL}")
    if dropped:
        parts.append(", ".join(dropped) + f": left out (the model has no {UNKNOWN_LABEL})")
    if ignored:
        parts.append(", ".join(ignored) + ": ignored")
    return "labels: " + "; ".join(parts)


def summary(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, keyword accuracy and unknown-word rejection (None where no row counts), then the
    evaluate stage's per-class metrics and confusion matrix. y_true, y_pred: [N] label indices."""
    metrics = classification_metrics(y_true, y_pred, labels)
    names = np.array(labels)[y_true]
    keyword = ~np.isin(names, [UNKNOWN_LABEL, SILENCE_LABEL])
    unknown = names == UNKNOWN_LABEL
    correct = y_true == y_pred

    def share(mask: np.ndarray) -> float | None:
        return round(float(correct[mask].mean()), 6) if mask.any() else None

    return {"accuracy": share(np.ones(len(y_true), bool)), "keyword_accuracy": share(keyword),
            "unknown_rejection": share(unknown), "clips": int(len(y_true)), "keyword_clips": int(keyword.sum()),
            "unknown_clips": int(unknown.sum()), "per_class": metrics["per_class"],
            "confusion_matrix": metrics["confusion_matrix"], "labels": labels}


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def main(*, model: str, data: str, out: str | None = None, as_json: bool = False) -> int:
    data_path = Path(data)
    rows, ignored = collect(data_path)  # before loading the model: a wrong DATA fails fast
    out_dir = Path(out) if out else data_path.resolve().with_name(data_path.resolve().stem + "_score")
    try:  # and where the results go, before any clip is scored
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScoreInputError(f"{out_dir}: can't write the results there ({e.strerror or e}; give --out)") from None
    predictor = Predictor(model)
    labels = predictor.labels
    mapping = label_mapping([label for _, label in rows], labels)
    if not as_json:
        print(describe_mapping(mapping, ignored))
    scorable = [(path, label) for path, label in rows if mapping[label] is not None]
    index = {label: i for i, label in enumerate(labels)}
    files, unreadable = [], []
    spec = predictor.spec
    # a bar for long folders, and only on a terminal (disable=None)
    for path, label in tqdm(scorable, desc="score", unit="clip", disable=True if len(scorable) < 50 else None):
        try:
            audio = load_audio(path, sample_rate=spec.sample_rate)
        except AudioError as e:
            tqdm.write(f"error: {e}", file=sys.stderr)  # above the bar, so it stays one clean line
            unreadable.append(str(path))
            continue
        scores = np.asarray(predictor(loudest_window(audio, spec.clip_samples, spec.hop_length)), np.float64)
        best = int(np.argmax(scores))
        files.append({"path": str(path), "label": label, "target": mapping[label], "predicted": labels[best],
                      "score": round(float(scores[best]), 6)})
    if unreadable:
        print(f"{len(unreadable)} of {len(scorable)} files could not be read", file=sys.stderr)
    if not files:
        raise ScoreInputError(f"{data_path}: none of the {len(scorable)} clips could be scored")

    y_true = np.array([index[f["target"]] for f in files])
    y_pred = np.array([index[f["predicted"]] for f in files])
    result = {"model": str(model), "artifact": predictor.artifact["path"], "data": str(data_path),
              **summary(y_true, y_pred, labels), "mapping": mapping, "ignored": ignored, "unreadable": unreadable,
              "files": files}
    write_json_atomic(out_dir / "score.json", result)
    plot_confusion_matrix(np.array(result["confusion_matrix"]), labels, out_dir / "confusion_matrix.png",
                          f"{data_path.name}: accuracy {result['accuracy']:.2%} (n={result['clips']})")
    if as_json:
        print(json.dumps(result))
        return 0
    print(f"accuracy          {_percent(result['accuracy']):>7s}  ({result['clips']} clips)")
    print(f"keyword accuracy  {_percent(result['keyword_accuracy']):>7s}  ({result['keyword_clips']} clips of model words)")
    print(f"unknown rejection {_percent(result['unknown_rejection']):>7s}  ({result['unknown_clips']} {UNKNOWN_LABEL} clips "
          f"predicted {UNKNOWN_LABEL})")
    predicted = np.bincount(y_pred, minlength=len(labels))
    print(f"\n{'class':12s} {'support':>7s} {'precision':>9s} {'recall':>7s}")
    for i, label in enumerate(labels):
        m = result["per_class"][label]
        if m["support"] or predicted[i]:
            print(f"{label:12s} {m['support']:7d} {m['precision']:9.3f} {m['recall']:7.3f}")
    print(f"\n-> {out_dir / 'score.json'}, {out_dir / 'confusion_matrix.png'}")
    return 0
