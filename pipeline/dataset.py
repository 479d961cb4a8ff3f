"""Reading what the data stages wrote: the prepared split index (one CSV per split, written by the
prepare stage), a prepared row as audio, and the feature cache (written by the features stage).

Every stage and command that needs clips or cached features reads them through here, so no stage
reaches into another stage's module.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import zlib
from pathlib import Path

import numpy as np

from pipeline.audio import fit_length, load_audio
from pipeline.config import SILENCE_LABEL
from pipeline.feature_spec import FeatureSpec

SPLITS = ("train", "validation", "test")
# offset/gain: where a _silence_ clip is cut from its noise file; fragment: 1 = only part of the word (_unknown_)
ROW_FIELDS = ["path", "label", "offset", "gain", "fragment"]
SPEECH_DIR = "_speech_"  # running speech (synthesized datasets): _unknown_ windows and context around words
TRAINING_SPEECH_DIR = "_speech_training_"  # running speech of speakers who only train (the accent voices)
PHRASE_DIR = "_phrases_"  # command words inside carrier phrases (synthesized datasets), spans in spans.csv
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # ~134M, the constant of the dataset's own rule


# ---- the split index (prepare stage) ----------------------------------------------------------

def which_set(filename: str, *, validation_percentage: float, testing_percentage: float) -> str:
    """The dataset's split rule: SHA1 of the name before ``_nohash_`` -> 'training'|'validation'|'testing'.

    Every clip of a speaker lands in the same split, and adding clips never moves old ones.
    """
    base = Path(filename).name
    speaker = re.sub(r"_nohash_.*$", "", base)
    hashed = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    percentage = (hashed % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def split_of(cfg, filename: str) -> str:
    """``which_set`` with the config's validation and testing percentages."""
    return which_set(filename, validation_percentage=cfg.task.validation_percentage,
                     testing_percentage=cfg.task.testing_percentage)


def speaker_of(path: str) -> str:
    return re.sub(r"_nohash_.*$", "", Path(path).name)


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ROW_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def read_rows(prepared_dir: Path, split: str) -> list[dict]:
    with open(prepared_dir / f"{split}.csv", newline="") as fh:
        return [{"path": r["path"], "label": r["label"], "offset": int(r["offset"]), "gain": float(r["gain"]),
                 "fragment": int(r.get("fragment") or 0)} for r in csv.DictReader(fh)]


# ---- a prepared row as audio ------------------------------------------------------------------
_NOISE_CACHE: dict[str, np.ndarray] = {}  # per process: background-noise files are read many times


def noise_audio(path: str, sample_rate: int) -> np.ndarray:
    """A background-noise file, read once per process."""
    if path not in _NOISE_CACHE:
        _NOISE_CACHE[path] = load_audio(path, sample_rate=sample_rate)
    return _NOISE_CACHE[path]


def load_clip(row: dict, spec: FeatureSpec) -> np.ndarray:
    """One prepared row as exactly clip_samples of audio: a word clip (padded/cropped), a word fragment,
    a window of running speech (from ``offset``), or a silence cut. Raises AudioError for an unreadable file."""
    if row["label"] == SILENCE_LABEL:
        noise = noise_audio(row["path"], spec.sample_rate)
        start = min(row["offset"], max(0, len(noise) - spec.clip_samples))
        return fit_length(noise[start:start + spec.clip_samples], spec.clip_samples) * row["gain"]
    audio = fit_length(load_audio(row["path"], sample_rate=spec.sample_rate, start=row["offset"], frames=spec.clip_samples),
                       spec.clip_samples)
    return word_fragment(audio, seed=zlib.crc32(row["path"].encode())) if row.get("fragment") else audio


def word_fragment(audio: np.ndarray, *, seed: int) -> np.ndarray:
    """Keep only the head or the tail (25-50%) of the spoken word, as a sliding window sees it."""
    rng = np.random.default_rng(seed)
    loud = np.flatnonzero(np.abs(audio) > 0.1 * max(float(np.abs(audio).max()), 1e-6))
    if loud.size == 0:
        return audio
    first, last = int(loud[0]), int(loud[-1]) + 1
    keep = int((last - first) * rng.uniform(0.25, 0.5))
    out = audio.copy()
    if rng.random() < 0.5:
        out[first + keep:] = 0.0  # head only
    else:
        out[:last - keep] = 0.0  # tail only
    return out


# ---- the feature cache (features stage) --------------------------------------------------------

def load_split(features_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A split's cache: (features memmap [versions, N, T, M] float16 over every row, labels [n] and row
    indices [n] of the valid examples). Gather through the indices: a boolean mask would copy the memmap."""
    feats = np.load(features_dir / f"{split}.npy", mmap_mode="r")
    rows = np.flatnonzero(np.load(features_dir / f"{split}_valid.npy"))
    return feats, np.load(features_dir / f"{split}_labels.npy")[rows], rows


def load_stats(features_dir: Path) -> dict:
    return json.loads((features_dir / "stats.json").read_text())


def training_phrases(cfg) -> list[dict]:
    """The carrier phrases of training speakers (``_phrases_/spans.csv``: path, word, and the word's first and
    last sample), or [] for a dataset without them."""
    spans = cfg.dataset_dir / PHRASE_DIR / "spans.csv"
    if not spans.is_file():
        return []
    with open(spans, newline="") as fh:
        return [{"path": str(cfg.dataset_dir / PHRASE_DIR / r["file"]), "word": r["word"], "start": int(r["start"]),
                 "end": int(r["end"])} for r in csv.DictReader(fh) if of_training_speaker(cfg, r["file"])]


def speech_files(cfg) -> list[tuple[Path, str]]:
    """Every running-speech file of a synthesized dataset with its split ('training'|'validation'|'testing'):
    ``_speech_/`` by its speaker's hash, ``_speech_training_/`` (speakers who only train) always training."""
    root = cfg.dataset_dir
    return ([(p, split_of(cfg, p.name)) for p in sorted((root / SPEECH_DIR).glob("*.wav"))]
            + [(p, "training") for p in sorted((root / TRAINING_SPEECH_DIR).glob("*.wav"))])


def training_speech(cfg) -> list[str]:
    """The running-speech files of training speakers (``speech_files``)."""
    return [str(p) for p, split in speech_files(cfg) if split == "training"]


def of_training_speaker(cfg, file_name: str) -> bool:
    """Whether a file (or a bare speaker id) belongs to a speaker of the training split."""
    return split_of(cfg, file_name) == "training"
