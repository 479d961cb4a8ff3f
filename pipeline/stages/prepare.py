"""Prepare stage: the standard Speech Commands splits, with TF examples/speech_commands semantics.

Splits come from validation_list.txt / testing_list.txt (the SHA1 ``which_set`` rule when they are
missing). Words outside the task's labels become ``_unknown_`` and ``_silence_`` is cut from
``_background_noise_``; each is ``percentage`` % of the split's keyword count, seeded. With an official
test archive (``dataset.test_url``) the test split is that archive. Output: one CSV per split and a report.
"""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, Config
from pipeline.dataset import SPLITS, speaker_of, speech_files, split_of, write_rows
from pipeline.errors import MissingInputError

BACKGROUND_DIR = "_background_noise_"
SPLIT_OF_RULE = {"training": "train", "validation": "validation", "testing": "test"}  # which_set's names -> ours


def _readable(path: Path) -> str | None:
    """None when soundfile can open it with at least one frame, else the reason."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        return (str(e).splitlines() or [type(e).__name__])[0]
    return None if info.frames > 0 else "empty audio (0 samples)"


def _list_words(root: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.wav")) for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith("_") and not d.name.startswith(".")}


def run(cfg: Config) -> Path:
    out = cfg.prepared_dir
    root = cfg.dataset_dir
    if (out / "report.json").is_file():  # the folder name is a hash of what it depends on
        print(f"prepare: {out} already complete")
        return out
    if not root.is_dir():
        raise MissingInputError(f"dataset folder {root} is missing: run the synth/download stage first")
    labels = cfg.labels
    keywords = [label for label in labels if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    use_official_test = cfg.dataset.test_url is not None
    rng = np.random.default_rng(cfg.run.seed)

    listed = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        lst = root / name
        if lst.is_file():
            listed.update({line.strip(): split for line in lst.read_text().splitlines() if line.strip()})
    has_lists = bool(listed)

    known = {s: [] for s in SPLITS}
    unknown = {s: [] for s in SPLITS}
    # synth.training_unknown_words: only in train (synth leaves them out of the lists), drawn on their own
    training_only = cfg.synth.training_only_words
    extra_unknown = []
    skipped = []
    words = _list_words(root)
    total = sum(len(v) for v in words.values())
    with tqdm(total=total, desc="prepare", unit="clip") as bar:
        for word, files in words.items():
            for path in files:
                bar.update()
                rel = f"{word}/{path.name}"
                if has_lists:
                    split = listed.get(rel, "train")
                else:
                    split = SPLIT_OF_RULE[split_of(cfg, path.name)]
                if split == "test" and use_official_test:
                    continue  # the official test archive replaces it; never train on those clips either
                reason = _readable(path)
                if reason:
                    skipped.append({"path": str(path), "reason": reason})
                    continue
                if word in keywords:
                    known[split].append({"path": str(path), "label": word, "offset": 0, "gain": 1.0, "fragment": 0})
                elif UNKNOWN_LABEL in labels:
                    row = {"path": str(path), "label": UNKNOWN_LABEL, "offset": 0, "gain": 1.0, "fragment": 0}
                    (extra_unknown if word in training_only and split == "train" else unknown[split]).append(row)

    speech = {s: [] for s in SPLITS}  # running speech (synthesized datasets): (path, frames) per split
    for path, split in speech_files(cfg) if cfg.task.speech_percentage > 0 else []:
        if _readable(path) is None:
            speech[SPLIT_OF_RULE[split]].append((path, sf.info(str(path)).frames))

    noise_files = sorted((root / BACKGROUND_DIR).glob("*.wav")) if (root / BACKGROUND_DIR).is_dir() else []
    noise_files = [p for p in noise_files if _readable(p) is None]
    if SILENCE_LABEL in labels and not noise_files:
        raise MissingInputError(f"{root / BACKGROUND_DIR}: no readable noise WAVs to cut {SILENCE_LABEL} clips from")
    noise_frames = [sf.info(str(p)).frames for p in noise_files]

    rows = {}
    for split in SPLITS:
        if split == "test" and use_official_test:
            rows[split], bad = _official_test_rows(cfg.test_dataset_dir, labels)
            skipped.extend(bad)
            continue
        split_rows = list(known[split])
        if UNKNOWN_LABEL in labels:
            want = math.ceil(len(known[split]) * cfg.task.unknown_percentage / 100)
            pool = unknown[split]
            picks = rng.permutation(len(pool))[:want]
            split_rows += [pool[i] for i in sorted(picks)]
            if split == "train" and extra_unknown:  # their own random stream: every other row stays the same
                want = math.ceil(len(known[split]) * cfg.task.training_unknown_percentage / 100)
                picks = np.random.default_rng([cfg.run.seed, 3]).permutation(len(extra_unknown))[:want]
                split_rows += [extra_unknown[i] for i in sorted(picks)]
            if split != "test" and cfg.task.fragment_percentage > 0 and known[split]:
                want = math.ceil(len(known[split]) * cfg.task.fragment_percentage / 100)
                picks = rng.choice(len(known[split]), size=min(want, len(known[split])), replace=False)
                split_rows += [dict(known[split][i], label=UNKNOWN_LABEL, fragment=1) for i in sorted(picks)]
            if split != "test" and speech[split]:  # 1-s windows of running speech
                for _ in range(math.ceil(len(known[split]) * cfg.task.speech_percentage / 100)):
                    path, frames = speech[split][int(rng.integers(len(speech[split])))]
                    offset = int(rng.integers(0, max(1, frames - cfg.features.clip_samples)))
                    split_rows.append({"path": str(path), "label": UNKNOWN_LABEL, "offset": offset, "gain": 1.0,
                                       "fragment": 0})
        if SILENCE_LABEL in labels:
            want = math.ceil(len(known[split]) * cfg.task.silence_percentage / 100)
            clip = int(cfg.features.clip_samples * _rate_of(noise_files[0]) / cfg.features.sample_rate)
            for _ in range(want):
                i = int(rng.integers(len(noise_files)))
                offset = int(rng.integers(0, max(1, noise_frames[i] - clip)))
                split_rows.append({"path": str(noise_files[i]), "label": SILENCE_LABEL, "offset": offset,
                                   "gain": round(float(rng.uniform(0, 1)), 4), "fragment": 0})
        rows[split] = split_rows

    speakers = {s: {speaker_of(r["path"]) for r in rows[s] if r["label"] != SILENCE_LABEL} for s in SPLITS}
    overlap = {f"{a}&{b}": len(speakers[a] & speakers[b])
               for a, b in (("train", "validation"), ("train", "test"), ("validation", "test"))}
    if not use_official_test and any(overlap.values()):
        print(f"prepare: WARNING speakers shared between splits: {overlap}")
    report = {
        "dataset": str(root), "labels": labels, "lists": "files" if has_lists else "sha1 which_set rule",
        "official_test_archive": use_official_test,
        "counts": {s: dict(sorted(Counter(r["label"] for r in rows[s]).items())) for s in SPLITS},
        "totals": {s: len(rows[s]) for s in SPLITS},
        "speakers": {s: len(speakers[s]) for s in SPLITS}, "speaker_overlap": overlap,
        "skipped": len(skipped), "skipped_files": skipped,
    }
    for split in SPLITS:
        missing = [label for label in labels if report["counts"][split].get(label, 0) == 0]
        if missing:
            print(f"prepare: WARNING {split} split has no examples of {', '.join(missing)}")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split in SPLITS:
        write_rows(tmp / f"{split}.csv", rows[split])
    (tmp / "report.json").write_text(json.dumps(report, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"prepare: train/validation/test = {report['totals']['train']}/{report['totals']['validation']}/"
          f"{report['totals']['test']} clips, {len(skipped)} skipped -> {out / 'report.json'}")
    return out


def _rate_of(path: Path) -> int:
    return sf.info(str(path)).samplerate


def _official_test_rows(root: Path, labels: list[str]) -> tuple[list[dict], list[dict]]:
    """The official test archive: one folder per label (incl. _silence_/_unknown_), some '.wav.wav' names."""
    if not root.is_dir():
        raise MissingInputError(f"official test set {root} is missing: run the download stage (dataset.test_url)")
    rows, skipped = [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        label = folder.name if folder.name in labels else UNKNOWN_LABEL
        if label not in labels:
            continue
        for path in sorted(folder.glob("*.wav")):
            reason = _readable(path)
            if reason:
                skipped.append({"path": str(path), "reason": reason})
            else:
                rows.append({"path": str(path), "label": label, "offset": 0, "gain": 1.0, "fragment": 0})
    return rows, skipped
