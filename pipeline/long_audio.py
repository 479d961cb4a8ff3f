"""The always-on benchmark's recordings: running speech with command words in it, from held-out voices.

A keyword spotter that listens all day hears mostly ordinary speech; its false alarms come from there.
The verify stage measures recall and false alarms per hour on two recordings made here:
- ``validation`` (and ``validation_2``, ... with ``export.long_audio_validation_recordings``): voices of
  the validation split; verify picks the detection threshold on them, counted as one recording;
- ``test``: voices of the test split; verify reports its figures at that threshold.
No voice of either is ever trained on (the splits are speaker-disjoint).

Each recording is ``minutes`` long: stretches of running speech (1-4 sentences without any command
word, ``pipeline/sentences.py``, in words no training sentence says, validation's vocabulary apart from
test's: ``sentence_words``; spoken by one espeak-ng voice of the split with its own rate and
pitch), and between them, every 10-20 s on average, a command word: said alone (a keyword clip of the
split, as in the dataset) or inside a short carrier phrase ("please say {} now"), where espeak's word
timings give its span. Under it all runs background noise (the dataset's ``_background_noise_``
files) at a signal-to-noise ratio drawn per 30-s block from ``SNRS_DB``.

With ``export.long_audio_quiet_recordings`` there are also *quiet* recordings, laid out like a room
where someone talks and now and then gives a command (``plan_quiet``): in the first sixth, a command said
alone after every 2-6 s of speech (one sentence); then running speech only, where the false alarms come
from; one low noise floor (``QUIET_SNR_DB`` under the speech) all through. ``validation_quiet``,
``validation_quiet_2``, ... join the validation recordings that pick the threshold; ``test_quiet`` is
reported beside ``test``.

Recordings are made once and cached, like any stage output, in ``Config.long_audio_dir`` (its name is
a hash of what they depend on): ``{split}.wav`` (16-bit PCM) and ``{split}.json`` (the keyword events, and
the transcript: every piece of speech with its time and text).
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.audio import AudioError, load_audio, write_wav
from pipeline.config import COMMAND_WORDS, SILENCE_LABEL, UNKNOWN_LABEL, Config
from pipeline.dataset import load_clip, read_rows, split_of
from pipeline.errors import StageError
from pipeline.espeak import Espeak, speaker_id
from pipeline.feature_spec import FeatureSpec
from pipeline.sentences import HELD_OUT_WORDS, VALIDATION_WORDS, WORDS, carrier, sentence

SPLITS = ("validation", "test")
SNRS_DB = (30.0, 20.0, 10.0)  # speech-to-noise ratios of the background, one per 30-s block
NOISE_BLOCK_S = 30.0
KEYWORD_EVERY_S = (10.0, 20.0)  # a command word after this much running speech (uniform)
QUIET_COMMAND_EVERY_S = (2.0, 6.0)  # quiet recordings: speech between two commands in their first sixth
QUIET_COMMAND_SHARE = 1 / 6  # 10 minutes of an hour
QUIET_SNR_DB = 30.0  # quiet recordings: the one noise level, under the speech
QUIET_STREAM = 7  # quiet recordings draw from their own random streams (the others stay as they were)


def split_speakers(cfg: Config, split: str, variants: list[str]) -> list[str]:
    """The espeak voices ("accent+variant") whose speaker falls in a split by the dataset's SHA1 rule:
    the demo dataset's own speakers of that split (for a downloaded dataset: voices no one trains on)."""
    name = {"validation": "validation", "test": "testing"}[split]
    voices = [f"{voice}+{variant}" for voice in cfg.synth.voices for variant in variants
              if split_of(cfg, f"{speaker_id(voice, variant)}_nohash_0.wav") == name]
    if not voices:
        raise StageError(f"no espeak voice of synth.voices x synth.variants falls in the {split} split: add voices")
    return voices


# ---- rendering speech in worker processes (one espeak each) ------------------------------------
_ESPEAK: Espeak | None = None


def _init_worker() -> None:
    global _ESPEAK
    _ESPEAK = Espeak()


def _render(job: dict) -> dict:
    """Speak one piece of text at the recording's rate; for a carrier phrase, also where its slot word is."""
    import soxr

    audio, words = _ESPEAK.say_timed(job["text"], voice=job["voice"], rate=job["rate"], pitch=job["pitch"])
    scale = job["sample_rate"] / _ESPEAK.sample_rate
    out = {"audio": soxr.resample(audio, _ESPEAK.sample_rate, job["sample_rate"]).astype(np.float32), "span": None}
    if job.get("keyword"):
        at = job["text"].index(job["keyword"])
        for pos, start, end in words:
            if pos == at:
                out["span"] = (int(start * scale), int(end * scale))
    return out


def word_span(audio: np.ndarray, sample_rate: int) -> tuple[int, int] | None:
    """[first, last) samples of the spoken word in a clip: above 2% of its peak, with 50 ms either side (a
    10%-of-peak cut would drop soft consonants, "ye(s)"). None for a silent clip."""
    loud = np.flatnonzero(np.abs(audio) > 0.02 * max(float(np.abs(audio).max()), 1e-6))
    if loud.size == 0:
        return None
    margin = int(0.05 * sample_rate)
    return max(0, int(loud[0]) - margin), min(len(audio), int(loud[-1]) + 1 + margin)


def word_only(audio: np.ndarray, sample_rate: int) -> np.ndarray | None:
    """A keyword clip cut to its word (word_span), as said alone in a recording; None for a silent clip."""
    cut = word_span(audio, sample_rate)
    return None if cut is None else audio[cut[0]:cut[1]]


def at_speaking_level(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A rendered piece of speech scaled to a random peak of 0.3-0.9; None when espeak gave silence."""
    peak = float(np.abs(audio).max())
    return None if peak < 1e-3 else audio / peak * rng.uniform(0.3, 0.9)


def speech_piece(text: str, *, voice: str, rate: int, pitch: int, sample_rate: int, rng: np.random.Generator) -> dict:
    """A stretch of running speech for a plan, with the pause after it (0.2-0.8 s)."""
    return {"kind": "speech", "text": text, "voice": voice, "rate": rate, "pitch": pitch, "sample_rate": sample_rate,
            "pause": float(rng.uniform(0.2, 0.8))}


def estimated_seconds(piece: dict) -> float:
    """How long a speech piece and its pause take, estimated from its words and rate before espeak speaks it."""
    return 0.38 * len(piece["text"].split()) * 160 / piece["rate"] + piece["pause"]


def plan(*, minutes: float, sample_rate: int, voices: list[str], rng: np.random.Generator,
         words: dict[str, list[str]] = WORDS) -> list[dict]:
    """The pieces of one recording in order: speech stretches, and keyword events (alone or in a phrase).
    The sentences' (and the carrier phrases') vocabulary is ``words``."""
    pieces, planned, next_keyword = [], 0.0, rng.uniform(*KEYWORD_EVERY_S)
    while planned < minutes * 60 * 1.1:  # speech length is only estimated here: plan 10% more
        voice = voices[int(rng.integers(len(voices)))]
        rate, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
        if planned >= next_keyword:
            word = COMMAND_WORDS[int(rng.integers(len(COMMAND_WORDS)))]
            if rng.random() < 0.5:
                pieces.append({"kind": "alone", "label": word, "pause": float(rng.uniform(0.5, 1.2))})
            else:
                pieces.append({"kind": "phrase", "label": word, "text": carrier(rng, words=words).format(word),
                               "keyword": word, "voice": voice, "rate": rate, "pitch": pitch, "sample_rate": sample_rate,
                               "pause": float(rng.uniform(0.3, 0.8))})
            next_keyword = planned + rng.uniform(*KEYWORD_EVERY_S)
            planned += 2.0
            continue
        piece = speech_piece(". ".join(sentence(rng, words) for _ in range(int(rng.integers(1, 5)))), voice=voice, rate=rate,
                             pitch=pitch, sample_rate=sample_rate, rng=rng)
        pieces.append(piece)
        planned += estimated_seconds(piece)
    return pieces


def plan_quiet(rng: np.random.Generator, voices: list[str], *, minutes: float, command_minutes: float,
               sample_rate: int, words: dict[str, list[str]] = WORDS) -> list[dict]:
    """The pieces of a quiet recording: in the first ``command_minutes``, a command said alone (its clip
    is drawn when placed) after every QUIET_COMMAND_EVERY_S of speech (one sentence at a time); after
    that, running speech only (1-4 sentences a stretch). The sentences' vocabulary is ``words``."""
    pieces, planned, next_command = [], 0.0, rng.uniform(*QUIET_COMMAND_EVERY_S)
    while planned < minutes * 60 * 1.1:  # lengths are estimated: plan 10% more
        voice = voices[int(rng.integers(len(voices)))]
        rate, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
        early = planned < command_minutes * 60
        if early and planned >= next_command:
            pieces.append({"kind": "alone", "pause": float(rng.uniform(0.5, 1.2))})
            planned += 1.5
            next_command = planned + rng.uniform(*QUIET_COMMAND_EVERY_S)
            continue
        piece = speech_piece(". ".join(sentence(rng, words) for _ in range(1 if early else int(rng.integers(1, 5)))),
                             voice=voice, rate=rate, pitch=pitch, sample_rate=sample_rate, rng=rng)
        pieces.append(piece)
        planned += estimated_seconds(piece)
    return pieces


def sentence_words(cfg: Config, split: str) -> dict[str, list[str]]:
    """The vocabulary a split's recordings speak (export.long_audio_words): with "held-out", words that no training
    sentence says, validation's (which picks the threshold) apart from test's (which reports); with "base",
    the pipeline's own, which the training speakers' sentences share."""
    if cfg.export.long_audio_words == "base":
        return WORDS
    return VALIDATION_WORDS if split == "validation" else HELD_OUT_WORDS


def is_quiet(name: str) -> bool:
    """Whether a recording of recording_names is laid out quiet (plan_quiet)."""
    return "_quiet" in name


def make_recording(cfg: Config, spec: FeatureSpec, split: str, *, minutes: float, voices: list[str],
                   pool, number: int = 1, quiet: bool = False) -> tuple[np.ndarray, list[dict], dict, list[dict]]:
    """(audio [S], keyword events [{label, start_s, end_s, kind}], counts, transcript) of one split's
    recording (its ``number``-th: each has its own random stream, and the first is the same whatever the
    count), laid out by ``plan`` or, ``quiet``, by ``plan_quiet``. The transcript is every piece as placed:
    [{kind, start_s, end_s, text}], a word said alone in capitals; verify shows what was said under each
    false alarm with it."""
    sr = spec.sample_rate
    rng = np.random.default_rng([cfg.run.seed, SPLITS.index(split)] + ([number] if number > 1 else [])
                                + ([QUIET_STREAM] if quiet else []))
    words = sentence_words(cfg, split)
    pieces = (plan_quiet(rng, voices, minutes=minutes, command_minutes=minutes * QUIET_COMMAND_SHARE, sample_rate=sr,
                         words=words)
              if quiet else plan(minutes=minutes, sample_rate=sr, voices=voices, rng=rng, words=words))
    spoken = [p for p in pieces if p["kind"] != "alone"]
    rendered = dict(zip(map(id, spoken), tqdm(pool.imap(_render, spoken, chunksize=4), total=len(spoken),
                                              desc=f"long audio ({split}{' quiet' if quiet else ''}{'' if number == 1 else f' {number}'})",
                                              unit="piece", leave=False)))
    rows = [r for r in read_rows(cfg.prepared_dir, "test" if split == "test" else "validation")
            if r["label"] not in (SILENCE_LABEL, UNKNOWN_LABEL) and not r.get("fragment")]
    total = int(minutes * 60 * sr)
    speech = np.zeros(total, np.float32)
    events, transcript, at, skipped = [], [], int(0.5 * sr), 0
    for piece in pieces:
        if at >= total:
            break
        label = piece.get("label")
        if piece["kind"] == "alone":  # a quiet recording's piece has no word yet: any clip of the split
            candidates = [r for r in rows if r["label"] == label] or rows
            row = candidates[int(rng.integers(len(candidates)))]
            label = row["label"]
            try:
                audio = load_clip(row, spec)
            except AudioError:
                skipped += 1
                continue
            audio = word_only(audio, sr)
            if audio is None:
                continue
            span = (0, len(audio))
        else:
            out = rendered[id(piece)]
            audio, span = at_speaking_level(out["audio"], rng), out["span"]
            if audio is None:
                continue
        audio = audio[:total - at]
        speech[at:at + len(audio)] = audio
        transcript.append({"kind": piece["kind"], "start_s": round(at / sr, 3), "end_s": round((at + len(audio)) / sr, 3),
                           "text": label.upper() if piece["kind"] == "alone" else piece["text"]})
        if piece["kind"] != "speech" and span is not None and at + span[1] <= total:
            events.append({"label": label, "kind": piece["kind"], "start_s": (at + span[0]) / sr,
                           "end_s": (at + span[1]) / sr})
        at += len(audio) + int(piece["pause"] * sr)
    mixed, block_snrs = add_noise(speech, noise_track(cfg, total, sr, rng), rng=rng, sample_rate=sr,
                                  snrs_db=(QUIET_SNR_DB,) if quiet else SNRS_DB)
    for event in events:  # the noise level a word was said in: recall by SNR
        event["snr_db"] = block_snrs[min(int(event["start_s"] // NOISE_BLOCK_S), len(block_snrs) - 1)]
    counts = {"keywords": len(events), "alone": sum(e["kind"] == "alone" for e in events),
              "in_phrases": sum(e["kind"] == "phrase" for e in events), "voices": len(voices),
              "skipped_unreadable_clips": skipped}
    return mixed, events, counts, transcript


def noise_track(cfg: Config, length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The dataset's background-noise files, end to end from a random start, as long as the recording."""
    files = sorted((cfg.dataset_dir / "_background_noise_").glob("*.wav"))
    if not files:
        return np.zeros(length, np.float32)
    noise = np.concatenate([load_audio(p, sample_rate=sample_rate) for p in files])
    return np.roll(np.resize(noise, length), int(rng.integers(len(noise))))


def add_noise(speech: np.ndarray, noise: np.ndarray, *, rng: np.random.Generator, sample_rate: int,
              snrs_db: tuple[float, ...] = SNRS_DB) -> tuple[np.ndarray, list[float | None]]:
    """(speech + noise, the SNR of each 30-s block): the noise scaled per block to an SNR drawn from
    snrs_db (default SNRS_DB; speech power measured over its active samples, so pauses don't make the noise louder);
    None for a block without noise."""
    active = np.abs(speech) > 0.01
    speech_power = float(np.mean(speech[active] ** 2)) if active.any() else 1e-4
    out, snrs = speech.copy(), []
    block = int(NOISE_BLOCK_S * sample_rate)
    for start in range(0, len(speech), block):
        part = noise[start:start + block]
        power = float(np.mean(part ** 2))
        snrs.append(None)
        if power > 0:
            snrs[-1] = snr = snrs_db[int(rng.integers(len(snrs_db)))]
            out[start:start + block] += part * np.sqrt(speech_power / power / 10 ** (snr / 10))
    return np.clip(out, -1.0, 1.0).astype(np.float32), snrs


def recording_names(cfg: Config) -> list[tuple[str, str, int]]:
    """(name, split, number) of every recording: ``validation``, ``validation_2``, ... (there are
    ``export.long_audio_validation_recordings``), then ``test``; with ``export.long_audio_quiet_recordings``
    also ``validation_quiet``, ``validation_quiet_2``, ... and ``test_quiet`` (is_quiet)."""
    n, quiet = cfg.export.long_audio_validation_recordings, cfg.export.long_audio_quiet_recordings
    numbered = lambda stem, k: stem if k == 1 else f"{stem}_{k}"  # noqa: E731
    return ([(numbered("validation", k), "validation", k) for k in range(1, n + 1)] + [("test", "test", 1)]
            + [(numbered("validation_quiet", k), "validation", k) for k in range(1, quiet + 1)]
            + ([("test_quiet", "test", 1)] if quiet else []))


def validation_names(cfg: Config) -> list[str]:
    """The names of the recordings that pick the threshold (``recording_names`` of the validation split)."""
    return [name for name, split, _ in recording_names(cfg) if split == "validation"]


def recordings(cfg: Config, spec: FeatureSpec, *, names: list[str] | None = None
               ) -> dict[str, tuple[np.ndarray, list[dict], dict]]:
    """{name: (audio, events, counts)} of every recording (``recording_names``) or of ``names``, made once
    (all of them) and cached."""
    folder = make_recordings(cfg, spec)
    out = {}
    for name in names or [name for name, _, _ in recording_names(cfg)]:
        meta = json.loads((folder / f"{name}.json").read_text())
        out[name] = (load_audio(folder / f"{name}.wav", sample_rate=spec.sample_rate), meta["events"], meta["counts"])
    return out


def make_recordings(cfg: Config, spec: FeatureSpec) -> Path:
    """Make every recording into their cache folder unless it is complete; returns the folder."""
    folder = cfg.long_audio_dir
    names = recording_names(cfg)
    if not all((folder / f"{name}.json").is_file() for name, _, _ in names):
        espeak = Espeak()
        variants = cfg.synth.variants or espeak.variants()
        del espeak
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        workers = cfg.features.workers or multiprocessing.cpu_count()
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for name, split, number in names:
                audio, events, counts, transcript = make_recording(
                    cfg, spec, split, minutes=cfg.export.long_audio_minutes, voices=split_speakers(cfg, split, variants),
                    pool=pool, number=number, quiet=is_quiet(name))
                write_wav(tmp / f"{name}.wav", audio, spec.sample_rate)
                (tmp / f"{name}.json").write_text(json.dumps({"counts": counts, "events": events,
                                                              "transcript": transcript}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def transcript(cfg: Config, name: str) -> list[dict]:
    """The pieces of a cached recording as placed (make_recording), for showing what was said when."""
    return json.loads((cfg.long_audio_dir / f"{name}.json").read_text())["transcript"]
