"""An always-on hour laid out like the outside check of docs/always_on.md ("An hour like the outside
check's"), and its score with a run's own detector and threshold.

The hour (``pipeline.long_audio.plan_quiet``, the layout of the verify stage's quiet recordings): in the
first ``--command-minutes`` (10), a command said alone after every 2-6 s of speech (one sentence); after
that, running speech only (1-4 sentences a stretch), so most of the hour is where false alarms come from;
a low noise floor (the dataset's noise files, ``--snr-db`` 30 under the speech;
``--no-noise``: none; ``--noise-file white_noise.wav``: that file alone). The voices are either
- ``accents``: espeak voices that no training config uses (the unseen-voice set's ten other-language
  voices, four random variants each), saying the sentences; the commands are the unseen-voice set's
  accent clips (make it first: scripts/make_unseen_voices.py --out DIR); or
- ``test``: the run's test-split speakers (held-out voices), with the test split's command clips; or
- ``other``: other synthesizers' English voices (flite and Festival, scripts/make_other_synth_set.py: training
  never uses them) saying the sentences, at their own rate and pitch; the commands are that set's clips (make it
  first: scripts/make_other_synth_set.py --out DIR, then --other DIR).

The sentences say the pipeline's own vocabulary (the default, ``base``), or with ``--words held-out`` words that
no training sentence says (``pipeline/sentences.py`` HELD_OUT_WORDS, as the verify stage's test recordings
with ``export.long_audio_words: held-out``): a room whose speech is new.

Usage (from the repo root, with the run's config and --set):
    .venv/bin/python scripts/quiet_hour.py make --voices accents --unseen DIR --out HOUR [--seed N] [--words held-out]
    .venv/bin/python scripts/quiet_hour.py score --run exports/demo --hour HOUR [--threshold T ...] [--model M]
``make`` writes HOUR.wav and HOUR.json (the commands: label, start_s, end_s). ``score`` streams HOUR.wav
through the run's detector exactly as ``./run detect`` does (TFLite, one state, the manifest's
parameters; ``--model model_continuous_int8.tflite``: its int8 pair) and prints recall and false alarms,
matched as verify matches them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import COMMAND_WORDS, load_config  # noqa: E402
from pipeline.feature_spec import FeatureSpec  # noqa: E402
from pipeline.sentences import VOCABULARIES  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_other_synth_set as other_synth  # noqa: E402

VARIANTS_PER_ACCENT = 4


def set_commands(folder: str | None, csv_name: str, need: str, maker: str) -> list[tuple[Path, str]]:
    """The command clips of a scoring set's ``csv_name`` (``path,label``, paths relative to ``folder``)."""
    if not folder or not (Path(folder) / csv_name).is_file():
        sys.exit(f"quiet_hour: {need} with {csv_name} ({maker})")
    root = Path(folder)
    rows = [line.split(",") for line in (root / csv_name).read_text().split()[1:]]
    return [(root / path, label) for path, label in rows if label in COMMAND_WORDS]


def command_clips(args, cfg) -> list[tuple[Path, str]]:
    if args.voices == "other":
        return set_commands(args.other, "english.csv", "--voices other needs --other DIR",
                            "scripts/make_other_synth_set.py")
    if args.voices == "accents":
        return set_commands(args.unseen, "accents.csv", "--voices accents needs --unseen DIR",
                            "scripts/make_unseen_voices.py")
    from pipeline.dataset import read_rows

    if not (cfg.prepared_dir / "test.csv").is_file():
        sys.exit(f"quiet_hour: no prepared test split in {cfg.prepared_dir}: run the demo (or give its config) first")
    return [(Path(r["path"]), r["label"]) for r in read_rows(cfg.prepared_dir, "test")
            if r["label"] in COMMAND_WORDS and not r.get("fragment")]


def render_other(job: dict) -> dict:
    """A speech piece said by another synthesizer's voice (``engine:voice``), at its own rate and pitch."""
    import subprocess
    import tempfile

    from pipeline.audio import AudioError

    engine, voice = job["voice"].split(":", 1)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            audio = other_synth.say(engine, voice, job["text"], Path(scratch))
        except (subprocess.SubprocessError, AudioError, OSError):  # can't say it: silence, which the layout skips
            audio = np.zeros(1, np.float32)
    return {"audio": audio, "span": None}


def make(args) -> None:
    from tqdm import tqdm

    from pipeline import long_audio
    from pipeline.audio import AudioError, load_audio, write_wav
    from pipeline.espeak import Espeak
    from pipeline.unseen_voices import UNSEEN_ACCENTS

    cfg = load_config(args.config, args.set)
    spec = FeatureSpec.from_config(cfg)
    sr = spec.sample_rate
    rng = np.random.default_rng(args.seed)
    clips = command_clips(args, cfg)
    if not args.no_noise and not sorted((cfg.dataset_dir / "_background_noise_").glob("*.wav")):
        sys.exit(f"quiet_hour: no noise files in {cfg.dataset_dir / '_background_noise_'}: run the demo first, give "
                 "its config (and --set), or pass --no-noise")
    variants = cfg.synth.variants or Espeak().variants()
    if args.voices == "other":
        installed = other_synth.installed_voices()  # asks flite and the file system once
        voices = [f"{engine}:{voice}" for engine, voice, group in other_synth.VOICES
                  if group == "english" and (engine, voice) in installed]
    elif args.voices == "accents":
        voices = [f"{accent}+{v}" for accent in UNSEEN_ACCENTS
                  for v in rng.choice(variants, VARIANTS_PER_ACCENT, replace=False)]
    else:
        voices = long_audio.split_speakers(cfg, "test", variants)
    pieces = long_audio.plan_quiet(rng, voices, minutes=args.minutes, command_minutes=args.command_minutes,
                                   sample_rate=sr, words=VOCABULARIES[args.words])
    spoken = [p for p in pieces if p["kind"] == "speech"]
    render = render_other if args.voices == "other" else long_audio._render
    with multiprocessing.get_context("spawn").Pool(cfg.features.workers or None,
                                                   initializer=long_audio._init_worker) as pool:
        rendered = dict(zip(map(id, spoken), tqdm(pool.imap(render, spoken, chunksize=4), total=len(spoken),
                                                  desc="quiet hour", unit="piece", leave=False)))
    total = int(args.minutes * 60 * sr)
    speech, events, at, skipped = np.zeros(total, np.float32), [], int(0.5 * sr), 0
    for piece in pieces:
        if at >= total:
            break
        if piece["kind"] == "alone":
            path, label = clips[int(rng.integers(len(clips)))]
            try:
                audio = load_audio(path, sample_rate=sr)
            except AudioError:
                skipped += 1
                continue
            audio = long_audio.word_only(audio, sr)
        else:
            audio = long_audio.at_speaking_level(rendered[id(piece)]["audio"], rng)
        if audio is None:
            continue
        audio = audio[:total - at]
        speech[at:at + len(audio)] = audio
        if piece["kind"] == "alone" and at + len(audio) <= total:
            events.append({"label": label, "kind": "alone", "start_s": at / sr, "end_s": (at + len(audio)) / sr})
        at += len(audio) + int(piece["pause"] * sr)
    if args.no_noise:
        mixed = np.clip(speech, -1.0, 1.0)
    else:
        if args.noise_file:  # one kind of noise (white noise was the hardest floor: docs/always_on.md)
            path = cfg.dataset_dir / "_background_noise_" / args.noise_file
            if not path.is_file():
                sys.exit(f"quiet_hour: no noise file {path}")
            noise = np.resize(load_audio(path, sample_rate=sr), total)
        else:
            noise = long_audio.noise_track(cfg, total, sr, rng)
        mixed, _ = long_audio.add_noise(speech, noise, rng=rng, sample_rate=sr,
                                        snrs_db=(args.snr_db,))  # one level for every 30-s block: a quiet room
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(out.with_suffix(".wav"), mixed, sr)
    out.with_suffix(".json").write_text(json.dumps({"voices": args.voices, "snr_db": None if args.no_noise else args.snr_db,
                                                    "seed": args.seed, "words": args.words,
                                                    "skipped_unreadable_clips": skipped, "events": events}, indent=1))
    print(f"{out.with_suffix('.wav')}: {args.minutes:g} min, {len(events)} commands said alone in the first "
          f"{args.command_minutes:g} min, {len(voices)} voices ({args.voices}), "
          + ("no noise" if args.no_noise else f"noise {args.snr_db:g} dB under the speech")
          + (f", {skipped} unreadable clips skipped" if skipped else ""))


def score(args) -> None:
    from pipeline.audio import audio_blocks
    from pipeline.edge.detection import DESIGN_MODELS, DetectionParams, Detector, pick_detections
    from pipeline.edge.run_folder import RunFolder
    from pipeline.stages.verify import match_detections

    hour = Path(args.hour)
    events = json.loads(hour.with_suffix(".json").read_text())["events"]
    run = RunFolder.of(Path(args.run))
    params = DetectionParams.from_manifest(run.manifest)
    art = run.artifact(run.path / (args.model or run.manifest.get("detection", {}).get("model", DESIGN_MODELS[params.design])))
    spec = run.feature_spec
    # steps 1-3 of the detector once (their output does not depend on the threshold), step 4 per threshold:
    # pick_detections replays the detector's Picker on the same smoothed windows
    detector = Detector(run.streaming_step(art), run.geometry, run.labels, params,
                        window_samples=spec["clip_samples"], sample_rate=spec["sample_rate"])
    times, smoothed, seconds = [], [], 0.0
    for block in audio_blocks(str(hour.with_suffix(".wav")), sample_rate=spec["sample_rate"]):
        seconds += len(block) / spec["sample_rate"]
        for time_s, row in detector.windows(block):
            times.append(time_s)
            smoothed.append(row)
    smoothed = np.asarray(smoothed).reshape(len(times), len(run.labels))
    for threshold in args.threshold or [params.threshold]:
        found = pick_detections(np.asarray(times), smoothed, run.labels, threshold=threshold,
                                refractory_s=params.refractory_s)
        used, false_alarms = match_detections(found, events)
        own = " (the run's)" if threshold == params.threshold else ""
        print(f"threshold {threshold:g}{own}: recall "
              f"{np.mean(used):.1%} ({sum(used)}/{len(events)}), {len(false_alarms)} false alarms in "
              f"{seconds / 3600:.2f} h ({', '.join(sorted(d.label for d in false_alarms)) or 'none'})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write HOUR.wav and HOUR.json")
    m.add_argument("--out", required=True, help="path without suffix")
    m.add_argument("--voices", choices=("accents", "test", "other"), default="accents")
    m.add_argument("--other", help="the other synthesizers' set (scripts/make_other_synth_set.py), for --voices other")
    m.add_argument("--unseen", help="the unseen-voice set (scripts/make_unseen_voices.py), for --voices accents")
    m.add_argument("--seed", type=int, default=77)
    m.add_argument("--words", choices=tuple(VOCABULARIES), default="base",
                   help="the sentences' vocabulary: the pipeline's own (base, which training sentences share), or "
                        "words that no training sentence says (held-out: pipeline/sentences.py HELD_OUT_WORDS, as the "
                        "verify stage's test recordings; validation: VALIDATION_WORDS, as its validation recordings)")
    m.add_argument("--minutes", type=float, default=60.0)
    m.add_argument("--command-minutes", type=float, default=10.0)
    m.add_argument("--snr-db", type=float, default=30.0, help="the noise floor under the speech")
    m.add_argument("--no-noise", action="store_true", help="digital silence between the pieces")
    m.add_argument("--noise-file", help="only this file of the dataset's _background_noise_ (e.g. white_noise.wav)")
    m.add_argument("--config", default="configs/demo.yaml")
    m.add_argument("--set", action="append", default=[], help="config override, as for ./run")
    s = sub.add_parser("score", help="the run's detector on HOUR.wav: recall and false alarms")
    s.add_argument("--run", required=True, help="a finished run's export folder")
    s.add_argument("--hour", required=True, help="what make wrote (path without suffix)")
    s.add_argument("--threshold", type=float, action="append", help="instead of the run's own (repeatable)")
    s.add_argument("--model", help="another streaming artifact of the run's design than its detection.model "
                                   "(model_continuous_int8.tflite)")
    args = ap.parse_args()
    make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    main()
