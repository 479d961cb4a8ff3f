"""Write a test set spoken by other synthesizers (flite and Festival), to score a model on voices that no
espeak-ng setting makes:

    sudo apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts   # English voices
    sudo apt-get install festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-suopuhe-lj \\
        festvox-suopuhe-mv festvox-ru                                         # other languages reading English
    .venv/bin/python scripts/make_other_synth_set.py --out data/other_synth
    ./run score exports/demo data/other_synth                  # every group
    ./run score exports/demo data/other_synth/english.csv      # one group

Training never uses these synthesizers (the demo's data comes from espeak-ng alone), so this set is for
scoring only. Most of their voices were built from recordings of real speakers (flite's CMU ARCTIC voices awb,
rms and slt; Festival's diphone voices). Every voice says the ten commands and the unseen-voice set's new words
(pipeline/unseen_voices.py UNSEEN_UNKNOWN_WORDS, labelled ``_unknown_``), as said and with its tempo or pitch
shifted (``SETTINGS``). Written as ``WORD/<voice>_<setting>_nohash_0.wav`` plus ``path,label`` CSVs by group
(``english.csv``, ``other_languages.csv``) and by engine (``flite.csv``, ``festival.csv``: docs/voice_ablation.md
chose on flite's voices and reports on Festival's), under a temporary name renamed at the end. A voice that is not
installed is skipped and named; a word a voice can't say is counted.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.audio import AudioError, load_audio, write_wav  # noqa: E402
from pipeline.augment import centre_fit  # noqa: E402
from pipeline.config import COMMAND_WORDS, UNKNOWN_LABEL  # noqa: E402
from pipeline.unseen_voices import UNSEEN_UNKNOWN_WORDS  # noqa: E402

SAMPLE_RATE = 16000
# (engine, voice, group): flite's voices by name, Festival's by the name of their voice_<name> function
VOICES = [
    ("flite", "kal16", "english"), ("flite", "awb", "english"), ("flite", "rms", "english"), ("flite", "slt", "english"),
    ("festival", "ked_diphone", "english"), ("festival", "kal_diphone", "english"),
    ("festival", "cmu_us_slt_arctic_hts", "english"),
    ("festival", "lp_diphone", "other_languages"), ("festival", "pc_diphone", "other_languages"),
    ("festival", "czech_dita", "other_languages"), ("festival", "czech_ph", "other_languages"),
    ("festival", "hy_fi_mv_diphone", "other_languages"), ("festival", "suo_fi_lj_diphone", "other_languages"),
    ("festival", "msu_ru_nsh_clunits", "other_languages"),
]
# as said, slower and faster (tempo, pitch kept), lower and higher (pitch in semitones, tempo kept)
SETTINGS = {"plain": (1.0, 0.0), "tempo0.85": (0.85, 0.0), "tempo1.15": (1.15, 0.0), "pitch-3": (1.0, -3.0),
            "pitch+3": (1.0, 3.0)}


def installed_voices() -> set[tuple[str, str]]:
    """(engine, voice) pairs this machine can speak with."""
    found = set()
    if shutil.which("flite"):
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True).stdout
        found |= {("flite", v) for v in listed.split(":", 1)[-1].split()}
    if shutil.which("text2wave"):
        found |= {("festival", p.name) for p in Path("/usr/share/festival/voices").glob("*/*") if p.is_dir()}
    return found


def say(engine: str, voice: str, word: str, folder: Path) -> np.ndarray:
    """One word from one voice, at SAMPLE_RATE, leading and trailing silence cut."""
    import librosa

    wav = folder / "say.wav"
    if engine == "flite":
        cmd = ["flite", "-voice", voice, "-t", word, "-o", str(wav)]
    else:
        text = folder / "say.txt"
        text.write_text(word + "\n")
        cmd = ["text2wave", "-eval", f"(voice_{voice})", str(text), "-o", str(wav)]
    subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    audio = load_audio(wav, sample_rate=SAMPLE_RATE)
    trimmed, _ = librosa.effects.trim(audio, top_db=40)
    return trimmed


def shifted(audio: np.ndarray, tempo: float, semitones: float) -> np.ndarray:
    import librosa

    if tempo != 1.0:
        audio = librosa.effects.time_stretch(audio, rate=tempo)
    if semitones:
        audio = librosa.effects.pitch_shift(audio, sr=SAMPLE_RATE, n_steps=semitones)
    return audio


def clip(audio: np.ndarray) -> np.ndarray:
    """Centred in 1 s (the middle second of a longer word), peak at 0.5."""
    return centre_fit(audio / max(float(np.abs(audio).max()), 1e-6) * 0.5, SAMPLE_RATE).astype(np.float32)


def build(out: Path) -> dict:
    from tqdm import tqdm

    if out.exists():
        raise SystemExit(f"error: {out} exists: remove it or pick another folder")
    have = installed_voices()
    voices = [v for v in VOICES if v[:2] in have]
    missing = [f"{engine}:{voice}" for engine, voice, _ in VOICES if (engine, voice) not in have]
    if not voices:
        raise SystemExit("error: no flite or Festival voice is installed (see this script's docstring)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    words = COMMAND_WORDS + UNSEEN_UNKNOWN_WORDS
    for word in words:
        (tmp / word).mkdir(parents=True)
    rows, failed = {}, 0
    with tempfile.TemporaryDirectory() as scratch:
        for engine, voice, group in tqdm(voices, desc="other synthesizers", unit="voice"):
            for word in words:
                try:
                    said = say(engine, voice, word, Path(scratch))
                except (subprocess.SubprocessError, AudioError, OSError):
                    failed += len(SETTINGS)
                    continue
                if len(said) < SAMPLE_RATE // 20:  # under 50 ms: the voice said nothing
                    failed += len(SETTINGS)
                    continue
                for name, (tempo, semitones) in SETTINGS.items():
                    path = tmp / word / f"{voice.replace('_', '-')}-{name}_nohash_0.wav"
                    write_wav(path, clip(shifted(said, tempo, semitones)), SAMPLE_RATE)
                    label = word if word in COMMAND_WORDS else UNKNOWN_LABEL
                    for name in (group, engine):
                        rows.setdefault(name, []).append((str(path.relative_to(tmp)), label))
    for group, group_rows in rows.items():
        with open(tmp / f"{group}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("path", "label"), *group_rows])
    tmp.rename(out)
    return {"voices": [v[1] for v in voices], "missing": missing, "failed": failed,
            **{group: len(r) for group, r in rows.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    counts = build(p.parse_args().out)
    if counts["missing"]:
        print(f"other synthesizers: not installed, skipped: {', '.join(counts['missing'])}")
    groups = ", ".join(f"{counts[g]} {g} clips" for g in ("english", "other_languages", "flite", "festival")
                       if g in counts)
    print(f"other synthesizers: {len(counts['voices'])} voices, {groups}, {counts['failed']} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
