"""Random English sentences with no command word in them: running speech for always-on tests.

A keyword spotter that listens all day hears mostly ordinary speech, and its false alarms come from
there. These sentences are built from templates over a fixed vocabulary that leaves out every command
word (yes no up down left right on off stop go) but keeps words that share sounds with them (know,
now, upon, top, light, write, often, gone, yesterday, ...), the hard negatives. Deterministic for a
given numpy Generator.
"""
from __future__ import annotations

import numpy as np

DETERMINERS = "the a this that my your our their every one some another".split()
ADJECTIVES = ("little old young big small quiet bright dark warm cold happy busy careful gentle heavy "
              "light early late lonely honest open yellow golden silver distant nearby strange simple "
              "modern ancient tired hungry clever lucky windy sunny rainy northern western noisy").split()
NOUNS = ("man woman child teacher doctor farmer driver neighbour friend sister brother mother father "
         "baby student captain singer writer painter dog cat bird horse fox rabbit garden house window "
         "kitchen table letter river mountain village city market station office school bridge road "
         "forest island ocean morning evening winter summer story question answer music picture "
         "message bottle basket candle blanket button pocket ticket jacket rocket stone topic "
         "toast coast boat goat note phone bone tone lot knot spot shop top").split()
VERBS_PAST = ("walked talked looked waited laughed smiled listened answered painted opened closed "
              "carried followed visited watched wanted noticed finished started remembered wrote read "
              "found brought bought thought taught caught sold told held made took gave sent knew "
              "showed lost won kept built spent heard saw met").split()
ADVERBS = ("slowly quickly quietly often rarely never always sometimes soon today yesterday tomorrow "
           "already again almost nearly really truly simply gladly happily upon later").split()
PREPOSITIONS = "in at over under near behind across through with from into along around beside beyond".split()
NAMES = "Anna Peter Maria Thomas Lucy David Sarah Oliver Emma Noah Grace Henry Sophie Jack Nora Leo".split()
TEMPLATES = [
    "{det} {adj} {noun} {verb} {prep} {det2} {noun2}",
    "{name} {verb} {det} {noun} {adv}",
    "{adv} {det} {noun} {verb} {det2} {adj} {noun2} {prep} the {noun3}",
    "{name} and {name2} {verb} {prep} the {adj} {noun}",
    "I think {det} {noun} {verb} {det2} {noun2} {adv}",
    "we {verb} {det} {adj} {noun} {prep} {det2} {noun2} {adv}",
    "{det} {noun} {prep} the {noun2} was {adj} and {adj2}",
    "did {name} know that {det} {noun} was {adj}",
    "after the {noun} {verb} {det} {noun2}, {name} {verb2} the {adj} {noun3}",
    "there was {det} {adj} {noun} {prep} the {noun2}",
]
VOCABULARY = set(DETERMINERS + ADJECTIVES + NOUNS + VERBS_PAST + ADVERBS + PREPOSITIONS + NAMES)


def sentence(rng: np.random.Generator) -> str:
    """One random sentence (5-14 words), no command word in it."""
    def pick(words: list[str]) -> str:
        return str(words[int(rng.integers(len(words)))])

    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(det=pick(DETERMINERS), det2=pick(DETERMINERS), adj=pick(ADJECTIVES), adj2=pick(ADJECTIVES),
                           noun=pick(NOUNS), noun2=pick(NOUNS), noun3=pick(NOUNS), verb=pick(VERBS_PAST),
                           verb2=pick(VERBS_PAST), adv=pick(ADVERBS), prep=pick(PREPOSITIONS), name=pick(NAMES),
                           name2=pick(NAMES))


# Carrier phrases for a command word said inside speech: "{}" is where the word goes.
CARRIERS = [
    "please say {} now", "I told {name} {} twice", "the word was {}", "{} I said", "and then {} again",
    "{name} shouted {} at the {noun}", "you can answer {} later", "just say {} to the {noun}",
]


# Carrier phrases for training (synth.phrases_per_speaker): none of them is a benchmark carrier above, so
# the long-audio recordings measure commands inside phrases the model never heard around them.
TRAINING_CARRIERS = [
    "say {} please", "{} is what {name} said", "we heard the {noun} say {}", "I think {} was the answer",
    "then {} came back", "tell the {noun} {} slowly", "{name} wrote {} in the {noun}", "maybe {} is better",
    "she said {} and smiled", "the answer is {} today", "when {name} says {} we wait", "so {} it is",
]


def carrier(rng: np.random.Generator, templates: list[str] = CARRIERS) -> str:
    """A short phrase with one slot ``{}`` for a command word (the benchmark's carriers unless told)."""
    template = templates[int(rng.integers(len(templates)))]
    return template.replace("{name}", str(NAMES[int(rng.integers(len(NAMES)))])).replace(
        "{noun}", str(NOUNS[int(rng.integers(len(NOUNS)))]))
