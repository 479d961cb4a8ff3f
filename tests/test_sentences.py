"""Running speech for always-on tests: sentences without command words, and word timings from espeak."""
import numpy as np
import pytest

from pipeline.config import COMMAND_WORDS
from pipeline.sentences import CARRIERS, TRAINING_CARRIERS, VOCABULARY, carrier, sentence


def test_sentences_never_hold_a_command_word_and_are_seeded():
    assert not set(COMMAND_WORDS) & {w.lower() for w in VOCABULARY}
    rng = np.random.default_rng(0)
    texts = [sentence(rng) for _ in range(500)]
    for text in texts:
        assert not set(COMMAND_WORDS) & set(text.replace(",", "").lower().split()), text
        assert 4 <= len(text.split()) <= 16
    assert len(set(texts)) > 450  # varied
    again = np.random.default_rng(0)
    assert [sentence(again) for _ in range(20)] == texts[:20]  # seeded


@pytest.mark.parametrize("templates", [CARRIERS, TRAINING_CARRIERS])
def test_carriers_have_one_slot_and_no_command_word(templates):
    rng = np.random.default_rng(1)
    for _ in range(100):
        phrase = carrier(rng, templates)
        assert phrase.count("{}") == 1
        assert not set(COMMAND_WORDS) & set(phrase.replace("{}", "").lower().split())


def test_training_carriers_are_none_of_the_benchmarks():
    assert not set(CARRIERS) & set(TRAINING_CARRIERS)


def test_espeak_word_timings_find_the_word_inside_a_phrase():
    from pipeline.espeak import Espeak

    espeak = Espeak()
    text = "the old man said yes to the dog"
    audio, words = espeak.say_timed(text, voice="en-us+m3", rate=160, pitch=50)
    assert [text[pos:].split()[0] for pos, _, _ in words] == text.split()
    starts = [start for _, start, _ in words]
    assert starts == sorted(starts) and 0 <= starts[0] and words[-1][2] == len(audio)
    pos, start, end = words[4]  # "yes": its span holds speech, and speaking it alone takes about as long
    alone = espeak.say("yes", voice="en-us+m3", rate=160, pitch=50)
    assert np.abs(audio[start:end]).max() > 0.05
    assert 0.5 < (end - start) / len(alone) < 2.0
