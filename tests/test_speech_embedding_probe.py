"""The equal-rejection reading of scripts/speech_embedding_probe.py (docs/voice_ablation.md reads models with it)."""
import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "speech_embedding_probe.py"
spec = importlib.util.spec_from_file_location("speech_embedding_probe", SCRIPT)
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def test_keywords_are_read_where_the_scaled_unknown_score_rejects_the_asked_share_of_new_words():
    # new words: heard as "yes" over _unknown_ by 9x and 7/3x, as "no" by 1.5x; one rejected as it stands (2/3x)
    # keywords ("yes"): over _unknown_ by 4x and 1.5x
    scores = np.array([[0, .1, .9, 0], [0, .3, .7, 0], [0, .6, .4, 0], [0, .4, 0, .6],
                       [0, .2, .8, 0], [0, .4, .6, 0]])
    y = np.array([1, 1, 1, 1, 2, 2])
    read = [probe.keywords_at_rejection(scores, y, LABELS, r) for r in (0.25, 0.5, 0.75, 1.0)]
    # 1 of 4 rejected costs no keyword; 2 of 4 need a scale past 1.5, which loses the 1.5x keyword; 3 of 4 past
    # 7/3, the same; 4 of 4 past 9, which loses both
    assert read == [1.0, 0.5, 0.5, 0.0]
    at_decision = probe.reading(scores, y, LABELS)
    assert at_decision["keywords"] == 1.0 and at_decision["rejected"] == 0.25


def test_no_reading_without_new_words_or_keywords():
    scores = np.array([[0, .2, .8, 0], [0, .6, .4, 0]])
    assert probe.keywords_at_rejection(scores, np.array([2, 2]), LABELS, 0.5) is None
    assert probe.keywords_at_rejection(scores, np.array([1, 1]), LABELS, 0.5) is None
