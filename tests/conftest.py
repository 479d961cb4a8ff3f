"""Shared fixtures: one tiny end-to-end run (real espeak, librosa, TF, TFLite) for every test that needs exports."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TINY = [
    "run.name=tiny",
    "synth.voices=[en, en-us]",
    "synth.variants=[m1, m2, m3, m4, m5, m6, m7, f1, f2, f3, f4, f5, croak, klatt, klatt2, whisper, Alex, Andy, Annie, "
    "Denis, Gene, Jacky, Lee, Mario, Michael, Mike, Storm, adam, anika, aunty]",
    "synth.unknown_per_speaker=1",
    "synth.training_unknown_per_speaker=1",  # the demo's training-only words, one per speaker
    "synth.accent_voices=[de]",  # the demo's 16 accents x 12 variants would swamp 60 speakers
    "synth.accent_variants=2",
    "train.hard_negative_epochs=0",  # tests/test_end_to_end.py runs it on its own
    "train.continuous_sequences=200",  # the continuous design, as the demo trains it, but small
    "train.continuous_epochs=1",
    "train.continuous_hard_negative_epochs=1",  # and its hard negatives from running speech
    "train.continuous_hard_negative_rounds=2",  # mined twice: the second round runs here (the demo mines once)
    "train.continuous_chain=2",  # chained, with a noise floor under half the chains
    "train.continuous_floor_probability=0.5",
    "synth.noise_seconds=5",
    "task.validation_percentage=20",
    "task.testing_percentage=20",
    "model.gru_units=[16, 16]",
    "model.dense_units=16",
    "train.epochs=2",
    "train.batch_size=32",
    "export.int8_calibration_examples=20",
    "export.long_audio_minutes=0.5",
]


def cli(*args, tmp: Path, extra=()):
    cmd = [sys.executable, "-m", "pipeline", *args]
    if args[0] not in ("predict", "detect", "score", "live"):
        for item in TINY + [f"paths.data={tmp / 'data'}", f"paths.exports={tmp / 'exports'}", *extra]:
            cmd += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    result = cli("all", tmp=tmp)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, tmp / "exports" / "tiny", result


