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
WORDS = {"det": DETERMINERS, "adj": ADJECTIVES, "noun": NOUNS, "verb": VERBS_PAST, "adv": ADVERBS,
         "prep": PREPOSITIONS, "name": NAMES}  # what the always-on recordings say

# More words for the training speakers' running speech only (synth.speech_training_words): a user's room has
# sentences of its own, so the hard negatives should not be one fixed vocabulary. Many share a vowel, an onset
# or an ending with a command (night/kite/tide ~ right, lift/theft/vest ~ left, bus/pup ~ up, noun/sound/owl ~
# down, gong/pond ~ on, moth/cloth ~ off, mop/crop/stock ~ stop, gold/ghost/crow ~ go, Bess/chest ~ yes,
# Joe/dough ~ no); no homophone of a command.
TRAINING_EXTRA_WORDS = {
    "adj": ("sick neat slow fast cheap rich poor deep wide long kind sad glad cool hot pale dull grey pink blue "
            "green red black white rough smooth steep weak strong loose tight fine ready sleepy silly jolly merry "
            "stormy foggy icy frozen spotted striped velvet plastic metal").split(),
    "noun": ("night kite flight tide side pride lid lip lift gift leaf theft vest nest guest chest desk chess yacht "
             "pup pub bus bun gun sun ton noun sound ground mound owl towel dawn lawn song gong bomb pond cloth moth "
             "loft mop crop stock stump stamp coal goal gold ghost toe bow row show crow dough soap bell shell well "
             "wing king sink tent bench fence cake bread bean seed moon spoon broom").split(),
    "verb": ("lifted gifted tested rested yelled spelled dwelt fell felt bent lent rode hid bit fought slid sang "
             "rang hung dug ran swam sat ate drank slept wept crept leapt dealt blew sewed mowed rowed towed bowed "
             "glowed hopped popped shopped mopped chopped jogged hummed hunted counted pounded frowned drowned "
             "crowned coughed rocked locked knocked").split(),
    "adv": "nicely wisely fairly slightly lightly brightly tightly nightly seldom mostly partly highly deeply "
           "weekly yearly daily".split(),
    "prep": "until since during despite like unlike except".split(),
    "name": "Owen Nell Gus Dora Ned Betty Tess Bess Tom Don Ron Goldie Lola Rita Moe Joe".split(),
}
TRAINING_WORDS = {kind: words + TRAINING_EXTRA_WORDS.get(kind, []) for kind, words in WORDS.items()}

# A vocabulary that no sentence of training or of the pipeline's recordings uses, for held-out recordings
# (scripts/quiet_hour.py --words held-out): false alarms on words the model never heard in running speech.
HELD_OUT_WORDS = {
    "det": "the a this that his her its each any".split(),
    "adj": ("pretty tiny huge shiny dusty fancy plain proud brave calm wild soft wet dry fresh sweet sour bitter "
            "loud brown round sharp flat tall short thin thick lazy funny nervous polite famous friendly wooden "
            "broken empty crowded narrow").split(),
    "noun": ("pilot nurse cousin uncle aunt chef miner sailor lawyer banker kitten puppy tiger lion goose duck sheep "
             "mouse pony camel cottage tower castle cabin hotel church harbour valley meadow desert canyon lake beach "
             "hill street lane corner chair lamp clock mirror carpet pillow kettle ladder hammer wallet camera guitar "
             "piano violin trumpet drum bucket cup rope sock shirt coat hat boot glove ring coin crown gown town "
             "cloud storm rain snow").split(),
    "verb": ("jumped climbed cooked cleaned fixed pushed pulled dropped picked dressed crossed missed kissed hugged "
             "helped asked called played stayed moved loved hated liked used tried cried dried chased raced passed "
             "guessed pressed fed led fed drew flew grew threw wore tore swore broke spoke chose froze").split(),
    # ("fed" twice: the hours measured in docs/always_on.md were made from this list)
    "adv": ("loudly softly gently kindly rudely badly warmly proudly calmly neatly boldly barely hardly lately "
            "finally suddenly tonight outside inside indeed instead").split(),
    "prep": "past before inside outside below above beneath among against toward within without".split(),
    "name": "Oscar Ella Hugo Ruby Felix Alice Simon Chloe Adam Lily Ethan Zoe Victor Mia Isaac Ivy".split(),
}
# A third vocabulary, shared with none of the above, for the verify stage's validation recordings: the threshold is
# picked on a room whose sentences the model never heard, as a user's room is, and the test recordings (in
# HELD_OUT_WORDS) still report on words that neither training nor the pick ever saw (export.long_audio_words). Like
# the others it keeps words that sound near a command (clown, hound, cow ~ down; hut, cub ~ up; shelf, Jeff ~ left;
# height, Dwight ~ right; swan, wand ~ on; toffee, trough ~ off; step, stack ~ stop; mole, bowl, doe ~ no, go;
# Jess, princess ~ yes): without them validation is an easier room than the test's, and picks a lower threshold.
VALIDATION_WORDS = {
    "det": "the a this that some each every".split(),
    "adj": ("ugly lovely curly hairy fluffy rusty muddy sandy salty spicy creamy juicy crispy sticky greasy shabby "
            "grumpy cheerful careless useless hopeful graceful awful gloomy cozy tidy fragile hollow humble eager "
            "fierce clumsy jealous anxious curious generous stubborn patient sincere elegant royal rural urban "
            "vivid deaf deft").split(),
    "noun": ("parrot eagle penguin dolphin whale shark beetle spider donkey zebra giraffe monkey panda squirrel "
             "hamster lizard frog library museum theatre airport factory garage bakery cellar attic balcony porch "
             "stable barn pier tunnel palace temple prison umbrella helmet scarf apron sandal slipper necklace "
             "bracelet feather pebble shovel rake ladle saucer teapot napkin envelope parcel pencil crayon marble "
             "puzzle balloon trophy medal ribbon lantern torch compass globe barber butcher tailor plumber dentist "
             "judge clerk poet actor dancer grocer knight queen prince cherry lemon melon peach pear plum carrot "
             "onion potato cabbage cookie muffin pancake waffle noodle cheese butter clown hound cow shelf elf hut "
             "nut cub tub mole pole hole bowl doe height swan wand palm trough stack stove step prop mattress "
             "princess fortress toffee").split(),
    "verb": ("danced skated knitted baked fried boiled stirred poured washed brushed combed folded wrapped buried "
             "borrowed repaired polished scrubbed sneezed yawned whistled giggled whispered wandered hurried sailed "
             "floated drifted tumbled stumbled trembled wiggled juggled explored ordered delivered measured "
             "gathered scattered collected invented discovered howled scowled shut rubbed confessed stepped stacked "
             "propped swapped puffed").split(),
    "adv": ("eagerly nervously bravely sadly merrily loosely firmly briefly rapidly lazily honestly openly secretly "
            "cheerfully patiently awkwardly silently anyway somehow meanwhile perhaps yet").split(),
    "prep": "between amid opposite throughout underneath alongside".split(),
    "name": ("Arthur Bella Carl Daisy Edgar Fiona George Hazel Ian Julia Kevin Laura Martin Olivia Paul Rose Jeff Jess Wes "
             "Dwight Shawn Flo").split(),
}
# what recordings can say (scripts/quiet_hour.py --words)
VOCABULARIES = {"base": WORDS, "held-out": HELD_OUT_WORDS, "validation": VALIDATION_WORDS}


def sentence(rng: np.random.Generator, words: dict[str, list[str]] = WORDS) -> str:
    """One random sentence (5-14 words), no command word in it, from ``words`` (by kind, as WORDS)."""
    def pick(kind: str) -> str:
        return str(words[kind][int(rng.integers(len(words[kind])))])

    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return template.format(det=pick("det"), det2=pick("det"), adj=pick("adj"), adj2=pick("adj"), noun=pick("noun"),
                           noun2=pick("noun"), noun3=pick("noun"), verb=pick("verb"), verb2=pick("verb"),
                           adv=pick("adv"), prep=pick("prep"), name=pick("name"), name2=pick("name"))


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


def carrier(rng: np.random.Generator, templates: list[str] = CARRIERS, words: dict[str, list[str]] = WORDS) -> str:
    """A short phrase with one slot ``{}`` for a command word (the benchmark's carriers unless told), its
    name and noun from ``words``."""
    template = templates[int(rng.integers(len(templates)))]
    names, nouns = words["name"], words["noun"]
    return template.replace("{name}", str(names[int(rng.integers(len(names)))])).replace(
        "{noun}", str(nouns[int(rng.integers(len(nouns)))]))
