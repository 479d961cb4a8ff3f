"""Running speech for always-on tests: sentences without command words, and word timings from espeak."""
import numpy as np
import pytest

from pipeline.config import COMMAND_WORDS
from pipeline.sentences import (CARRIERS, HELD_OUT_WORDS, TEMPLATES, TRAINING_CARRIERS, TRAINING_WORDS, VALIDATION_WORDS,
                                VOCABULARY, WORDS, carrier, sentence)


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


def test_the_training_and_held_out_vocabularies():
    """TRAINING_WORDS (the training speakers' running speech) adds new words to the recordings' WORDS; HELD_OUT_WORDS
    (test recordings) and VALIDATION_WORDS (validation recordings) share no content word with either or with each
    other (the determiners are shared), and VALIDATION_WORDS none with the words said alone either; none holds a
    command, and the training words add none of the unseen-voice set's words."""
    from pipeline.config import DEMO_UNKNOWN_WORDS, TRAINING_UNKNOWN_WORDS
    from pipeline.unseen_voices import UNSEEN_UNKNOWN_WORDS

    def lower(words):
        return {w.lower() for kind, listed in words.items() if kind != "det" for w in listed}

    base, training, held_out, validation = lower(WORDS), lower(TRAINING_WORDS), lower(HELD_OUT_WORDS), lower(VALIDATION_WORDS)
    assert base < training and len(training - base) > 200 and not held_out & training
    assert not validation & (training | held_out) and len(validation) > 200
    assert not validation & {w.lower() for w in TRAINING_UNKNOWN_WORDS + DEMO_UNKNOWN_WORDS + UNSEEN_UNKNOWN_WORDS}
    assert not (training | held_out | validation) & set(COMMAND_WORDS)
    assert not (training - base) & set(UNSEEN_UNKNOWN_WORDS)  # nothing new to train on the unseen-voice set's words
    for words, allowed in ((WORDS, base), (TRAINING_WORDS, training), (HELD_OUT_WORDS, held_out),
                           (VALIDATION_WORDS, validation)):
        rng = np.random.default_rng(3)
        said = {w.lower() for _ in range(300) for w in sentence(rng, words).replace(",", "").split()}
        assert not said & set(COMMAND_WORDS)
        template_words = {w.lower() for t in TEMPLATES for w in t.replace(",", "").split() if "{" not in w}
        assert said - template_words - set(words["det"]) <= allowed and len(said & allowed) > 150
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    assert [sentence(rng) for _ in range(5)] == [sentence(again, WORDS) for _ in range(5)]  # WORDS is the default


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
