"""Synth stage: the offline demo dataset, spoken by espeak-ng, in the Speech Commands layout.

A "speaker" is one espeak voice (accent) with one voice variant (m1, f3, croak, ...): its hash is the
``<speaker>`` part of ``<speaker>_nohash_<n>.wav``. Each take gets its own random rate, pitch, gain and
position, so one speaker's clips differ the way one person's recordings do. The SHA1 ``which_set`` rule
on the speaker hash writes ``validation_list.txt``/``testing_list.txt``, so the splits are
speaker-disjoint: test accuracy measures voices the model never heard. ``synth.accent_voices`` (other
languages reading the English words) add speakers that only train; ``synth.emphasis_probability`` reads
takes through SSML emphasis and volume.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.audio import resample_hq, write_wav
from pipeline.config import COMMAND_WORDS, Config, ConfigError
from pipeline.dataset import PHRASE_DIR, SPEECH_DIR, TRAINING_SPEECH_DIR, of_training_speaker, split_of
from pipeline.espeak import Espeak, speaker_id, ssml_word
from pipeline.long_audio import word_span
from pipeline.sentences import TRAINING_CARRIERS, TRAINING_WORDS, WORDS, carrier, sentence
from pipeline.errors import StageError

def _loud_bounds(audio: np.ndarray, threshold: float = 0.01) -> tuple[int, int] | None:
    """[first, last) samples above ``threshold``, or None for a silent clip."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return (int(loud[0]), int(loud[-1]) + 1) if loud.size else None


def _trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    bounds = _loud_bounds(audio, threshold)
    return audio[bounds[0]:bounds[1]] if bounds else audio[:0]


def place_in_clip(word: np.ndarray, *, clip_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Put a trimmed word at a random position in a 1-s clip (cropped if longer), like a person's recording."""
    word = _trim(word)[:clip_samples]
    clip = np.zeros(clip_samples, np.float32)
    start = int(rng.integers(0, clip_samples - len(word) + 1))
    clip[start:start + len(word)] = word
    return clip


# ---- worker processes: one espeak instance each ---------------------------------------------
_ESPEAK: Espeak | None = None


def _init_worker() -> None:
    global _ESPEAK
    _ESPEAK = Espeak()


def _synth_phrase(job: dict) -> tuple[str, str | None, dict | None]:
    """Render one whole carrier phrase; returns (relative path, error or None, the command word's span)."""
    raw, words = _ESPEAK.say_timed(job["text"], voice=job["voice"], rate=job["rate"], pitch=job["pitch"],
                                   pitch_range=job["range"])
    span = next(((start, end) for pos, start, end in words if pos == job["word_at"]), None)
    if span is None:
        return job["path"], "espeak gave no timing for the word", None
    scale = job["sample_rate"] / _ESPEAK.sample_rate
    audio = resample_hq(raw, orig_sr=_ESPEAK.sample_rate, target_sr=job["sample_rate"])
    audio = audio / max(float(np.abs(audio).max()), 1e-6)
    start, end = int(span[0] * scale), min(len(audio), int(span[1] * scale))
    # espeak's span runs to the next word's start: keep where the word itself sounds (its pause is not the word)
    inner = word_span(audio[start:end], job["sample_rate"]) if end > start else None
    bounds = _loud_bounds(audio)
    if inner is None or bounds is None:
        return job["path"], "espeak produced silence for the word", None
    first, last = bounds  # trim the phrase, keep the word's samples in it
    start, end = max(first, start + inner[0]), min(last, start + inner[1])
    write_wav(Path(job["root"]) / job["path"], audio[first:last] * job["gain"], job["sample_rate"])
    return job["path"], None, {"file": Path(job["path"]).name, "word": job["phrase_word"],
                               "start": start - first, "end": end - first}


def _synth_job(job: dict) -> tuple[str, str | None, dict | None]:
    """Render one clip. Returns (relative path, error or None, a phrase's word span or None)."""
    rng = np.random.default_rng(job["seed"])
    try:
        if job.get("phrase_word"):
            return _synth_phrase(job)
        text, ssml = job.get("text", job["word"]), "emphasis" in job
        if ssml:
            text = ssml_word(text, emphasis=job["emphasis"], volume=job["volume"])
        raw, words = _ESPEAK.say_timed(text, voice=job["voice"], rate=job["rate"], pitch=job["pitch"],
                                       pitch_range=job["range"], ssml=ssml)
        if job.get("keyword"):  # a word said inside a carrier phrase: cut out at espeak's word timings
            span = next(((start, end) for pos, start, end in words if pos == job["word_at"]), None)
            if span is None:
                return job["path"], "espeak gave no timing for the word", None
            raw = raw[span[0]:span[1]]
        audio = resample_hq(raw, orig_sr=_ESPEAK.sample_rate, target_sr=job["sample_rate"])
        if np.abs(audio).max() < 0.01:
            return job["path"], "espeak produced silence", None
        if "text" in job and not job.get("keyword"):  # running speech: the whole utterance, trimmed
            clip = _trim(audio / np.abs(audio).max()) * job["gain"]
        else:
            clip = place_in_clip(audio / np.abs(audio).max(), clip_samples=job["clip_samples"], rng=rng) * job["gain"]
        write_wav(Path(job["root"]) / job["path"], clip, job["sample_rate"])
        return job["path"], None, None
    except Exception as e:  # one bad voice must not stop the dataset
        return job["path"], str(e), None


def make_noise(kind: str, *, seconds: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Background noise of a few colours and a mains hum, peak-normalized to 0.5."""
    n = seconds * sample_rate
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    if kind == "white_noise":
        audio = white
    elif kind == "pink_noise":
        audio = np.fft.irfft(spectrum / np.sqrt(np.maximum(freqs, 1.0)), n)
    elif kind == "brown_noise":
        audio = np.fft.irfft(spectrum / np.maximum(freqs, 1.0), n)
    elif kind == "running_tap":  # band-limited noise with a slow wobble
        audio = np.fft.irfft(spectrum * ((freqs > 800) & (freqs < 5000)), n)
        audio *= 1 + 0.3 * np.sin(2 * np.pi * 3 * np.arange(n) / sample_rate)
    elif kind == "hum":
        t = np.arange(n) / sample_rate
        audio = sum(np.sin(2 * np.pi * 50 * h * t) / h for h in range(1, 8)) + 0.05 * white
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


NOISE_KINDS = ["white_noise", "pink_noise", "brown_noise", "running_tap", "hum"]


def plan_jobs(cfg: Config, variants: list[str], root: Path) -> tuple[list[dict], list[dict]]:
    """Every clip to render, and the speaker table. Deterministic under run.seed."""
    s = cfg.synth
    rng = np.random.default_rng(cfg.run.seed)
    phrase_rng = np.random.default_rng([cfg.run.seed, 7])  # its own stream: phrases leave every other clip alone
    word_rng = np.random.default_rng([cfg.run.seed, 8])  # the same for the training-only words
    speech_rng = np.random.default_rng([cfg.run.seed, 9])  # the same for the training speakers' wider vocabulary
    take_rng = np.random.default_rng([cfg.run.seed, 10])  # the same for the training-only phrase takes
    jobs, speakers = [], []
    pairs = [(voice, variant) for voice in s.voices for variant in variants]
    for voice in s.accent_voices:  # a few random variants of each other-language voice
        picks = rng.choice(len(variants), size=min(s.accent_variants, len(variants)), replace=False)
        pairs += [(voice, variants[i]) for i in sorted(picks)]
    for voice, variant in pairs:
        spk = speaker_id(voice, variant)
        speakers.append({"speaker": spk, "voice": voice, "variant": variant})
        # every speaker says every command word; a few random other words feed _unknown_
        extra = list(rng.choice(s.unknown_words, size=min(s.unknown_per_speaker, len(s.unknown_words)), replace=False))
        # a speaker of the training split: held-out voices say nothing that only trains
        trains = voice in s.accent_voices or of_training_speaker(cfg, spk)
        # running speech, for _unknown_ windows and word context (main voices only: accent speakers only train)
        for n in range(s.speech_per_speaker if voice in s.voices else 0):
            path = f"{SPEECH_DIR}/{spk}_nohash_{n}.wav"
            # drawn either way, so that every other clip keeps its random draws
            sentences = [sentence(rng) for _ in range(int(rng.integers(2, 4)))]
            if s.speech_training_words and trains:
                sentences = [sentence(speech_rng, TRAINING_WORDS) for _ in sentences]
            jobs.append(_job_for(cfg, rng, root, word=SPEECH_DIR, voice=f"{voice}+{variant}", path=path,
                                 text=". ".join(sentences)))
        for n in range(s.accent_speech_per_speaker if voice in s.accent_voices else 0):  # they only train
            jobs.append(_job_for(cfg, speech_rng, root, word=TRAINING_SPEECH_DIR, voice=f"{voice}+{variant}",
                                 path=f"{TRAINING_SPEECH_DIR}/{spk}_nohash_{n}.wav",
                                 text=". ".join(sentence(speech_rng, TRAINING_WORDS if s.speech_training_words else WORDS)
                                                for _ in range(int(speech_rng.integers(2, 4))))))
        for word in word_rng.choice(s.training_unknown_words, replace=False,
                                    size=min(s.training_unknown_per_speaker if trains else 0, len(s.training_unknown_words))):
            jobs.append(_job_for(cfg, word_rng, root, word=str(word), voice=f"{voice}+{variant}",
                                 path=f"{word}/{spk}_nohash_0.wav", **_prosody(word_rng, s.emphasis_probability)))
        for n in range(s.phrases_per_speaker if voice in s.voices else 0):
            word = str(phrase_rng.choice(COMMAND_WORDS))
            jobs.append(_job_for(cfg, phrase_rng, root, word=PHRASE_DIR, voice=f"{voice}+{variant}",
                                 path=f"{PHRASE_DIR}/{spk}_nohash_{n}.wav", phrase_word=word,
                                 **_in_carrier(carrier(phrase_rng, TRAINING_CARRIERS), word)))
        for word in COMMAND_WORDS + extra:
            for take in range(s.takes_per_word):
                jobs.append(_job_for(cfg, rng, root, word=str(word), voice=f"{voice}+{variant}",
                                     path=f"{word}/{spk}_nohash_{take}.wav", **_prosody(rng, s.emphasis_probability)))
            if word in COMMAND_WORDS and rng.random() < s.phrase_take_probability:
                jobs.append(_job_for(cfg, rng, root, word=str(word), voice=f"{voice}+{variant}",
                                     path=f"{word}/{spk}_nohash_{s.takes_per_word}.wav",
                                     keyword=str(word), **_in_carrier(carrier(rng, TRAINING_CARRIERS), word)))
            if trains and word in COMMAND_WORDS and take_rng.random() < s.training_phrase_take_probability:
                jobs.append(_job_for(cfg, take_rng, root, word=str(word), voice=f"{voice}+{variant}",
                                     path=f"{word}/{spk}_nohash_{s.takes_per_word + 1}.wav",
                                     keyword=str(word), **_in_carrier(carrier(take_rng, TRAINING_CARRIERS), word)))
    return jobs, speakers


def _in_carrier(template: str, word: str) -> dict:
    """The text of a carrier phrase with ``word`` in its slot, and where the word starts in it: found from the
    slot, not by searching, since the word can begin another word before it ("the goat say go")."""
    return {"text": template.format(word), "word_at": template.index("{}")}


EMPHASIS_LEVELS = ["none", "reduced", "moderate", "strong"]
VOLUMES = ["soft", "medium", "loud"]


def _prosody(rng: np.random.Generator, probability: float) -> dict:
    """SSML emphasis and volume for one take, with ``probability`` (synth.emphasis_probability); else {}."""
    if probability <= 0 or rng.random() >= probability:
        return {}
    return {"emphasis": str(rng.choice(EMPHASIS_LEVELS)), "volume": str(rng.choice(VOLUMES))}


def _job_for(cfg: Config, rng: np.random.Generator, root: Path, *, word: str, voice: str, path: str, **extra) -> dict:
    """One clip to render, with this take's own rate, pitch, pitch range and gain."""
    s, f = cfg.synth, cfg.features
    return {"word": word, "voice": voice, "path": path, "rate": int(rng.integers(s.rate_min, s.rate_max + 1)),
            "pitch": int(rng.integers(s.pitch_min, s.pitch_max + 1)), "range": int(rng.integers(20, 90)),
            "gain": float(rng.uniform(0.3, 0.95)), "seed": int(rng.integers(2**31)), "sample_rate": f.sample_rate,
            "clip_samples": f.clip_samples, "root": str(root), **extra}


def run(cfg: Config) -> Path:
    """Synthesize the demo dataset into ``cfg.dataset_dir`` (written under a temp name, then renamed)."""
    out = cfg.dataset_dir
    if out.exists():
        print(f"synth: {out} already complete")
        return out
    t0 = time.time()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    espeak = Espeak()
    available = espeak.variants()
    variants = cfg.synth.variants or available
    missing = sorted(set(variants) - set(available))
    if missing:
        raise ConfigError(f"config key synth.variants: espeak has no variant {missing[0]!r} (available: {', '.join(available)})")
    del espeak
    jobs, speakers = plan_jobs(cfg, variants, tmp)
    for word in sorted({j["word"] for j in jobs}):
        (tmp / word).mkdir()
    workers = cfg.features.workers or os.cpu_count() or 1
    failures, spans = [], []
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        for path, error, span in tqdm(pool.imap_unordered(_synth_job, jobs, chunksize=32), total=len(jobs),
                                      desc="synth", unit="clip"):
            if error:
                failures.append({"path": path, "error": error})
            elif span:
                spans.append(span)
    if spans:
        with open(tmp / PHRASE_DIR / "spans.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["file", "word", "start", "end"])
            writer.writeheader()
            writer.writerows(sorted(spans, key=lambda r: r["file"]))
    if jobs and len(failures) == len(jobs):
        raise StageError(f"synth: every clip failed, e.g. {failures[0]['path']}: {failures[0]['error']}")
    rng = np.random.default_rng(cfg.run.seed + 1)
    noise_dir = tmp / "_background_noise_"
    noise_dir.mkdir()
    for kind in NOISE_KINDS:
        write_wav(noise_dir / f"{kind}.wav", make_noise(kind, seconds=cfg.synth.noise_seconds,
                                                          sample_rate=cfg.features.sample_rate, rng=rng), cfg.features.sample_rate)
    (noise_dir / "README.md").write_text("Synthesized background noise (numpy), like the real dataset's folder.\n")
    _write_split_lists(tmp, cfg, training_only={s["speaker"] for s in speakers if s["voice"] in cfg.synth.accent_voices},
                       training_only_words=cfg.synth.training_only_words)
    with open(tmp / "speakers.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["speaker", "voice", "variant"])
        writer.writeheader()
        writer.writerows(speakers)
    report = {"clips": len(jobs) - len(failures), "speakers": len(speakers), "failed": failures,
              "seconds": round(time.time() - t0, 1)}
    (tmp / "synth_report.json").write_text(json.dumps(report, indent=1))
    tmp.rename(out)
    print(f"synth: {report['clips']} clips from {len(speakers)} speakers in {report['seconds']} s"
          + (f" ({len(spans)} of them carrier phrases in {PHRASE_DIR}/)" if spans else "")
          + (f", {len(failures)} failed (listed in synth_report.json)" if failures else ""))
    return out


def _write_split_lists(root: Path, cfg: Config, training_only: set[str] = frozenset(),
                       training_only_words: set[str] = frozenset()) -> None:
    """validation_list.txt / testing_list.txt from the dataset's own SHA1 rule, as in the real archive.

    Speakers in ``training_only`` (the accent voices) are in neither list, so they only ever train:
    the held-out splits stay the English voices, comparable from run to run, and how far the accents
    carry is measured on other languages (pipeline/unseen_voices.py), not on more speakers of the same ones.
    Folders in ``training_only_words`` (synth.training_unknown_words) only train too: the held-out splits keep
    the vocabulary of synth.unknown_words."""
    lists = {"validation": [], "testing": []}
    for wav in sorted(root.glob("*/*.wav")):
        if (wav.parent.name.startswith("_") or wav.name.split("_nohash_")[0] in training_only
                or wav.parent.name in training_only_words):
            continue
        split = split_of(cfg, wav.name)
        if split in lists:
            lists[split].append(f"{wav.parent.name}/{wav.name}")
    for split, names in lists.items():
        (root / f"{split}_list.txt").write_text("".join(n + "\n" for n in names))
