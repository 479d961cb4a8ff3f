"""Audio I/O: every clip the pipeline reads goes through here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.errors import PipelineError


class AudioError(PipelineError, ValueError):
    """A file that can't be used as audio, reported as one line naming the file."""


def first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_audio(path: str | Path, *, sample_rate: int, resample: bool = True, mixdown: bool = True,
               start: int = 0, frames: int = -1) -> np.ndarray:
    """Read a sound file as float32 mono PCM in [-1, 1] at ``sample_rate``.

    Any format soundfile reads (wav, flac, ogg). With ``resample=False`` a different rate is an error,
    with ``mixdown=False`` more than one channel is an error. ``start``/``frames`` (in samples at
    ``sample_rate``; -1 = to the end) cut a piece; a file already at that rate is read from ``start``
    only (a 1-s window of a long recording costs 1 s of decoding). Returns shape [samples].
    """
    path = Path(path)
    try:
        with sf.SoundFile(str(path)) as sound:
            rate, total = sound.samplerate, sound.frames
            if rate == sample_rate and start > 0:
                sound.seek(min(start, sound.frames))
            data = sound.read(frames if rate == sample_rate else -1, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... for bad files
        raise AudioError(f"{path}: not a readable audio file ({first_line(e)})") from None
    if total == 0 or (data.shape[0] == 0 and start == 0):
        raise AudioError(f"{path}: empty audio (0 samples)")
    if data.shape[1] > 1 and not mixdown:
        raise AudioError(f"{path}: {data.shape[1]} channels, expected mono")
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
        audio = resample_hq(audio, orig_sr=rate, target_sr=sample_rate)
        audio = audio[start:] if frames < 0 else audio[start:start + frames]
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio contains NaN or Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_blocks(path: str | Path, *, sample_rate: int, block_seconds: float = 10.0):
    """Yield a sound file as float32 mono blocks at ``sample_rate``, reading ``block_seconds`` at a
    time (memory stays flat whatever the length); other rates go through a streaming resampler."""
    path = Path(path)
    try:
        sound = sf.SoundFile(str(path))
    except Exception as e:  # as in load_audio
        raise AudioError(f"{path}: not a readable audio file ({first_line(e)})") from None
    with sound:
        if sound.frames == 0:
            raise AudioError(f"{path}: empty audio (0 samples)")
        resampler = None
        if sound.samplerate != sample_rate:
            import soxr  # librosa's resampler, in its streaming form

            resampler = soxr.ResampleStream(sound.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
        blocksize = max(1, int(block_seconds * sound.samplerate))
        while True:
            position = sound.tell()
            try:
                data = sound.read(blocksize, dtype="float32", always_2d=True)
            except Exception as e:  # a file damaged partway: what came before it was already yielded
                raise AudioError(f"{path}: unreadable after {position / sound.samplerate:.1f} s "
                                 f"({first_line(e)})") from None
            last = len(data) < blocksize
            block = data.mean(axis=1)
            if resampler is not None:
                block = resampler.resample_chunk(block, last=last)
            if not np.all(np.isfinite(block)):
                raise AudioError(f"{path}: audio contains NaN or Inf samples")
            if len(block):
                yield np.ascontiguousarray(block, dtype=np.float32)
            if last:
                return


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad short clips at the end and crop long ones to exactly ``length`` samples."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])]
    return np.pad(audio, pad)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM WAV atomically (temp name, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    sf.write(str(tmp), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def resample_hq(audio: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(audio, res_type="soxr_hq")`` of 1-D audio (soxr's HQ mode, the length librosa
    gives), without importing librosa: its first import in a new venv compiles numba code, and the synth
    stage's worker processes waited ~35 s for it before their first clip."""
    import soxr

    if orig_sr == target_sr:
        return audio
    size = int(np.ceil(len(audio) * float(target_sr) / orig_sr))
    out = soxr.resample(audio, orig_sr, target_sr, quality="soxr_hq")[:size]
    return np.pad(out, (0, size - len(out))).astype(audio.dtype, copy=False)
