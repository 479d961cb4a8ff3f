"""An unseen-voice test set: espeak-ng voices, settings and words that training never uses.

A model trained on the demo's voices scores ~99% on its own held-out speakers, because held-out
speakers are still the same synthesizer at the same settings. This set asks what a user would: does it
carry past them? Three groups, each written as ``WORD/<speaker>_nohash_0.wav`` (the dataset layout, so
``./run score MODEL DIR`` reads it) plus one ``<group>.csv`` of ``path,label`` each:

- ``accents``: espeak voices of other languages (``UNSEEN_ACCENTS``) reading the English words, none of
  them in ``synth.voices`` or ``synth.accent_voices``;
- ``settings``: the training voices at speaking rates and pitches outside the training ranges;
- every speaker also says two of ``UNSEEN_UNKNOWN_WORDS``, words training never says (so the set measures
  rejection of new words, labelled ``_unknown_``).

Built from a config (for its voices and ranges) and a seed; deterministic; refuses a config that trains
on any of these voices or words.
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import COMMAND_WORDS, UNKNOWN_LABEL, Config, ConfigError
from pipeline.espeak import Espeak, speaker_id
from pipeline.stages import synth

UNSEEN_ACCENTS = ["es-419", "pt-BR", "fr-BE", "ca", "hr", "sk", "tr", "cy", "sw", "vi"]
UNSEEN_UNKNOWN_WORDS = ["guess", "nose", "cap", "dome", "laugh", "rice", "honey", "golf", "yard", "under",
                        "paper", "music", "apple", "doubt", "lamp", "north"]
UNKNOWN_PER_SPEAKER = 2


def _outside(rng: np.random.Generator, low: int, high: int, floor: int, ceiling: int) -> int:
    """An integer in [floor, low) or (high, ceiling], the two sides equally likely (one side if the other is empty)."""
    sides = [(floor, low - 1)] if low > floor else []
    sides += [(high + 1, ceiling)] if high < ceiling else []
    lo, hi = sides[int(rng.integers(len(sides)))]
    return int(rng.integers(lo, hi + 1))


def plan(cfg: Config, variants: list[str], root: Path, *, variants_per_voice: int, seed: int) -> list[dict]:
    """Every clip of the set, as synth jobs with a ``group`` key."""
    s = cfg.synth
    trained = set(s.voices) | set(s.accent_voices)
    if trained & set(UNSEEN_ACCENTS):
        raise ConfigError(f"synth voices {sorted(trained & set(UNSEEN_ACCENTS))} are in the unseen-voice set")
    if set(s.unknown_words) & set(UNSEEN_UNKNOWN_WORDS) or set(COMMAND_WORDS) & set(UNSEEN_UNKNOWN_WORDS):
        raise ConfigError("synth.unknown_words overlaps the unseen-voice set's words")
    if s.training_only_words & set(UNSEEN_UNKNOWN_WORDS):
        raise ConfigError("synth.training_unknown_words overlaps the unseen-voice set's words")
    rng = np.random.default_rng(seed)
    jobs = []
    for group, voices in (("accents", UNSEEN_ACCENTS), ("settings", list(s.voices))):
        for voice in voices:
            for i in sorted(rng.choice(len(variants), size=min(variants_per_voice, len(variants)), replace=False)):
                spk = speaker_id(f"unseen-{group}-{voice}", variants[i])
                words = COMMAND_WORDS + list(rng.choice(UNSEEN_UNKNOWN_WORDS, UNKNOWN_PER_SPEAKER, replace=False))
                for word in words:
                    job = synth._job_for(cfg, rng, root, word=str(word), voice=f"{voice}+{variants[i]}",
                                         path=f"{word}/{spk}_nohash_0.wav", group=group)
                    if group == "settings":  # rate and pitch training never draws
                        job["rate"] = _outside(rng, s.rate_min, s.rate_max, 80, 320)
                        job["pitch"] = _outside(rng, s.pitch_min, s.pitch_max, 0, 99)
                    jobs.append(job)
    return jobs


def build(cfg: Config, out: Path, *, variants_per_voice: int = 6, seed: int = 20261126) -> dict:
    """Render the set into ``out`` (written under a temp name, then renamed). Returns clip counts per group."""
    if out.exists():
        raise ConfigError(f"{out} exists: remove it or pick another folder")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    variants = Espeak().variants()
    jobs = plan(cfg, variants, tmp, variants_per_voice=variants_per_voice, seed=seed)
    for word in {j["word"] for j in jobs}:
        (tmp / word).mkdir()
    failed = set()
    workers = cfg.features.workers or os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(workers, initializer=synth._init_worker) as pool:
        for path, error, _ in tqdm(pool.imap_unordered(synth._synth_job, jobs, chunksize=16), total=len(jobs),
                                desc="unseen voices", unit="clip"):
            if error:
                failed.add(path)
    counts = {}
    for group in ("accents", "settings"):
        rows = [(j["path"], j["word"] if j["word"] in COMMAND_WORDS else UNKNOWN_LABEL)
                for j in jobs if j["group"] == group and j["path"] not in failed]
        with open(tmp / f"{group}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("path", "label"), *rows])
        counts[group] = len(rows)
    counts["failed"] = len(failed)
    tmp.rename(out)
    return counts
