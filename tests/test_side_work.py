"""The train stage's side process: what it hands back, and what happens when it fails."""
import multiprocessing
import sys

import numpy as np

from pipeline import side_work
from pipeline.config import load_config


def test_finish_hands_back_the_sequences_once_and_removes_them(tmp_path, capsys):
    x, y, w = np.ones((3, 5, 2), np.float16), np.zeros((3, 5), np.int32), np.ones((3, 5), np.float32)
    np.savez(tmp_path / side_work.SEQUENCES, x=x, y=y, w=w, vx=x[:1], vy=y[:1], vw=w[:1], seconds=12.5)
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(0,))
    process.start()
    built, seconds = side_work.finish(process, load_config(), tmp_path)
    (bx, by, bw), (vx, _, _) = built
    assert seconds == 12.5 and np.array_equal(bx, x) and np.array_equal(bw, w) and len(vx) == 1
    assert not (tmp_path / side_work.SEQUENCES).exists()  # a later run can't pick up this run's sequences
    assert "the side process had made" in capsys.readouterr().out


def test_a_failed_side_process_leaves_its_work_to_be_done_in_turn(tmp_path, capsys):
    (tmp_path / side_work.LOG).write_text("Traceback ...\nside work: OSError: disk full\n")
    process = multiprocessing.get_context("spawn").Process(target=sys.exit, args=(1,))
    process.start()
    assert side_work.finish(process, load_config(), tmp_path) == (None, None)
    out = capsys.readouterr().out
    assert "the side process failed (exit 1: side work: OSError: disk full)" in out and "done in turn" in out
