"""The one log-mel feature definition, shared by training, export (in-graph frontend) and predict."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

LOG_FORMULA = "10*log10(max(mel_power, 1e-10))"
LOG_FLOOR = 1e-10  # absolute floor, no per-clip top_db: features stay streaming-compatible


@dataclass(frozen=True)
class FeatureSpec:
    sample_rate: int = 16000
    clip_samples: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 7600.0
    center: bool = True  # librosa meaning: n_fft//2 zeros on both sides
    log: str = LOG_FORMULA

    @classmethod
    def from_config(cls, cfg) -> "FeatureSpec":
        f = cfg.features
        return cls(sample_rate=f.sample_rate, clip_samples=f.clip_samples, n_fft=f.n_fft, win_length=f.win_length,
                   hop_length=f.hop_length, n_mels=f.n_mels, fmin=f.fmin, fmax=f.fmax)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(**{k: d[k] for k in (f.name for f in dataclasses.fields(cls))})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def num_frames(self) -> int:
        """Frames per clip: 1 + clip_samples // hop_length (101 for 1 s at 10 ms)."""
        return 1 + self.clip_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_frames, self.n_mels)

    def mel_basis(self) -> np.ndarray:
        """librosa's (Slaney) mel filter bank, shape [n_mels, 1 + n_fft // 2]."""
        import librosa

        return librosa.filters.mel(sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels,
                                   fmin=self.fmin, fmax=self.fmax)


def librosa_logmel(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The reference: librosa.feature.melspectrogram of clips, then the log.

    audio: float32 [..., clip_samples] -> float32 [..., num_frames, n_mels] (un-normalized dB).
    """
    import librosa

    _check_length(audio, spec)
    mel = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(audio, dtype=np.float32), sr=spec.sample_rate, n_fft=spec.n_fft,
        hop_length=spec.hop_length, win_length=spec.win_length, window="hann", center=spec.center,
        pad_mode="constant", power=2.0, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax)
    db = 10.0 * np.log10(np.maximum(mel, LOG_FLOOR))
    return np.swapaxes(db, -1, -2).astype(np.float32)


def logmel(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """librosa's log-mel (``librosa_logmel``), computed in float32: what training, predict and the
    long-audio benchmark use.

    The same recipe step by step: zero padding of n_fft // 2 on both sides (center), frames every
    hop_length, periodic Hann of win_length centred in n_fft, rfft, power, librosa's Slaney mel basis,
    10 log10 with the floor. librosa runs its FFT in float64 and its framing in Python blocks; doing it in
    float32, CLIPS_PER_PASS clips at a time, is ~2x faster per core (0.17 against 0.40 ms per clip), and differs from librosa by ~1e-6 of a frame's peak power,
    far below the 0.03 dB step of the float16 feature cache (tests/test_features.py checks it; the
    profile is in docs/frontend.md).

    audio: float32 [..., clip_samples] -> float32 [..., num_frames, n_mels] (un-normalized dB).
    """
    import scipy.fft

    _check_length(audio, spec)
    lead = audio.shape[:-1]
    clips = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1, audio.shape[-1])
    pad = spec.n_fft // 2 if spec.center else 0
    window, basis = _float32_tables(spec)
    offset = (spec.n_fft - spec.win_length) // 2  # the window's nonzero span inside each n_fft frame
    out = np.empty((len(clips), *spec.shape), np.float32)
    for at in range(0, len(clips), CLIPS_PER_PASS):
        padded = np.pad(clips[at:at + CLIPS_PER_PASS], ((0, 0), (pad, pad)))
        frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft, axis=-1)[
            :, ::spec.hop_length, offset:offset + spec.win_length]
        spectrum = scipy.fft.rfft(frames * window, n=spec.n_fft, axis=-1)  # complex64 [b, T, 1 + n_fft // 2]
        mel = (spectrum.real ** 2 + spectrum.imag ** 2) @ basis  # power -> [b, T, n_mels]
        out[at:at + CLIPS_PER_PASS] = 10.0 * np.log10(np.maximum(mel, np.float32(LOG_FLOOR)))
    return out.reshape(*lead, *spec.shape)


# Clips per pass of logmel: a pass's temporaries (~1 MB) then stay in the core's L2 cache; measured on
# this machine's 2-MB-L2 cores, 2 clips per pass cost about half of what 64 do (scripts/features_profile.py).
CLIPS_PER_PASS = 2


def _check_length(audio: np.ndarray, spec: FeatureSpec) -> None:
    if audio.shape[-1] != spec.clip_samples:
        raise ValueError(f"audio has {audio.shape[-1]} samples, the feature spec wants clip_samples={spec.clip_samples}")


@functools.lru_cache(maxsize=8)
def _float32_tables(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """(periodic Hann [win_length], mel basis transposed [1 + n_fft // 2, n_mels]), float32: the window
    is the in-graph frontend's, so both paths window with the same float32 taps."""
    from pipeline.frontend import analysis_window  # numpy only at import; imported here to avoid a cycle

    return analysis_window(spec), np.ascontiguousarray(spec.mel_basis().T, dtype=np.float32)
