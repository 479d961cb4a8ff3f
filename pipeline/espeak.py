"""espeak-ng through ctypes: the speech synthesizer the demo dataset and the long-audio recordings use.

The library and its voices come from the espeakng-loader wheel, so nothing outside pip is needed. A
"speaker" is one espeak voice (accent) with one voice variant (m1, f3, croak, ...); ``speaker_id`` is
its 8-hex-digit hash, the ``<speaker>`` part of ``<speaker>_nohash_<n>.wav``.
"""
from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import numpy as np

from pipeline.errors import StageError

ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE = 1, 2, 3, 4  # espeak_PARAMETER
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_SSML = 0x10  # espeak_Synth flag: the text is SSML markup
ESPEAK_EVENT_LIST_TERMINATED, ESPEAK_EVENT_WORD = 0, 1


class _EspeakEvent(ctypes.Structure):
    """espeak_EVENT of speak_lib.h: the synth callback gets an array of these, ended by type 0."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_int64)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


class Espeak:
    """Minimal ctypes binding of the libespeak-ng bundled by espeakng-loader (one per process)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0)
        if self.sample_rate <= 0:
            raise StageError(f"espeak_Initialize failed with data path {self.data_path}")
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int]] = []  # (text position, first sample) of each word spoken
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _collect(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events and events[i].type != ESPEAK_EVENT_LIST_TERMINATED:
            if events[i].type == ESPEAK_EVENT_WORD:
                self._words.append((events[i].text_position - 1, events[i].sample))
            i += 1
        return 0

    def variants(self) -> list[str]:
        return sorted(p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file() and " " not in p.name)

    def say(self, text: str, *, voice: str, rate: int, pitch: int, pitch_range: int = 50, ssml: bool = False) -> np.ndarray:
        """Speak ``text`` (SSML markup when ``ssml``); returns float32 PCM at ``self.sample_rate``."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise StageError(f"espeak has no voice {voice!r}")
        for param, value in ((ESPEAK_RATE, rate), (ESPEAK_PITCH, pitch), (ESPEAK_RANGE, pitch_range), (ESPEAK_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, value, 0)
        self._chunks, self._words = [], []
        data = text.encode() + b"\0"
        if self.lib.espeak_Synth(data, len(data), 0, 1, 0, ESPEAK_SSML if ssml else 0, None, None) != 0:
            raise StageError(f"espeak_Synth failed for {text!r} with voice {voice!r}")
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0

    def say_timed(self, text: str, **voice) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """Speak ``text`` and say where each word is: (audio, [(char start, first sample, end sample)]).
        A word ends where the next one starts (or at the end of the audio): its span holds the pause after it."""
        audio = self.say(text, **voice)
        starts = sorted(self._words, key=lambda w: w[1])
        ends = [s for _, s in starts[1:]] + [len(audio)]
        return audio, [(pos, start, end) for (pos, start), end in zip(starts, ends)]


def ssml_word(word: str, *, emphasis: str, volume: str) -> str:
    """One word as SSML: an <emphasis> level (none, reduced, moderate, strong) inside a <prosody> volume."""
    return f'<speak><prosody volume="{volume}"><emphasis level="{emphasis}">{word}</emphasis></prosody></speak>'


def speaker_id(voice: str, variant: str) -> str:
    """8 hex digits, like the real dataset's speaker ids."""
    return hashlib.sha1(f"{voice}+{variant}".encode()).hexdigest()[:8]
