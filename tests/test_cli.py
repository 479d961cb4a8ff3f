"""User errors are one line (a PipelineError); anything else is a bug and keeps its traceback."""
import subprocess
import sys

import pytest

from pipeline.audio import AudioError
from pipeline.config import REPO_ROOT, ConfigError
from pipeline.errors import MissingInputError, PipelineError, StageError, known_error_message
from pipeline.stages.download import DownloadError
from pipeline.stages.verify import VerificationError


def run_cli(*args, tmp):
    cmd = [sys.executable, "-m", "pipeline", *args]
    if args[0] not in ("predict", "detect"):
        cmd += ["--set", f"paths.data={tmp / 'data'}", "--set", f"paths.exports={tmp / 'exports'}"]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("error", [ConfigError, AudioError, DownloadError, VerificationError, MissingInputError,
                                   StageError])
def test_every_known_error_is_a_pipeline_error_reported_in_one_line(error):
    assert issubclass(error, PipelineError)
    assert known_error_message(error("first line\nsecond line")) == "first line"


@pytest.mark.parametrize("error", [FileNotFoundError, RuntimeError, ValueError, KeyError])
def test_other_exceptions_are_bugs_that_keep_their_traceback(error):
    assert known_error_message(error("x")) is None


def assert_one_error_line(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]


def test_a_bad_synth_variant_is_one_line_naming_the_key(tmp_path):
    result = run_cli("synth", "--set", "synth.variants=[no_such_variant]", tmp=tmp_path)
    assert_one_error_line(result, "synth.variants", "no_such_variant")


def test_a_stage_whose_input_is_missing_is_one_line(tmp_path):
    result = run_cli("prepare", "--set", "dataset.source=download", "--set", f"dataset.url={tmp_path / 'none.tar.gz'}",
                     tmp=tmp_path)
    assert_one_error_line(result, "none.tar.gz")


def test_predict_with_a_missing_model_is_one_line(tmp_path):
    result = run_cli("predict", str(tmp_path / "model.tflite"), str(tmp_path / "x.wav"), tmp=tmp_path)
    assert_one_error_line(result, "model.tflite")


def test_detect_with_a_model_outside_a_run_folder_is_one_line(tmp_path):
    (tmp_path / "model_streaming.tflite").write_bytes(b"\0" * 16)
    result = run_cli("detect", str(tmp_path / "model_streaming.tflite"), str(tmp_path / "x.wav"), tmp=tmp_path)
    assert_one_error_line(result, "manifest.json")
