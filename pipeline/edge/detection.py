"""Continuous keyword detection: the one algorithm that ``./run detect``, the verify stage's long-audio
benchmark, the live page (web/) and the README's phone sketches run. Its parameters are written to
manifest.json under ``detection``; ``design`` names how step 1 gets scores.

1. Scores, every stride (window / streams hops: 200 ms), by one of two designs:
   - ``continuous`` (``model_continuous.tflite``, trained by pipeline/continuous.py to listen without
     resets): one streaming state, never reset, fed every hop; at every stride-th log-mel frame its
     scores are read. Time: that frame's centre, frame * hop / sample rate.
   - ``staggered`` (``model_streaming.tflite``, the 1-s model): it was trained on 1-s clips that start
     from silence, so ``streams`` states run side by side, staggered by the stride; each starts from the
     zero state, takes one window of audio hop by hop, is flushed (``Stream.flush``) to give that window's
     scores, and restarts from zero. Time: the window's centre, (end sample - window / 2) / sample rate.
2. Times: each score vector gets its design's time above (``window_time_s`` for the staggered windows).
3. Smoothing: the mean score vector of the last ``smooth_windows`` score vectors (fewer at the start).
4. Picking: the best keyword (not ``_silence_``/``_unknown_``) of each smoothed vector fires when its
   score is >= ``threshold``, the previous detection is at least ``refractory_s`` earlier, and the keyword
   is armed. A keyword that fires is disarmed until its smoothed score falls below ``threshold`` again:
   one detection per rise. (The continuous state's score for a word said alone can stay above the
   threshold through the pause after it; with the refractory period alone, it fired the same word a
   second time 1.0-1.25 s later, counted as a false alarm.)
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.edge.runtime import Stream, StreamGeometry

NON_KEYWORDS = ("_silence_", "_unknown_")
DESIGN_MODELS = {"continuous": "model_continuous.tflite", "staggered": "model_streaming.tflite"}


@dataclass(frozen=True)
class DetectionParams:
    design: str = "staggered"  # how step 1 gets scores: "continuous" or "staggered" (DESIGN_MODELS)
    streams: int = 5  # a decision every window / streams (200 ms); staggered: that many states
    smooth_windows: int = 3  # decisions averaged (600 ms)
    threshold: float = 0.8  # smoothed keyword score that fires (verify tunes it on long audio)
    refractory_s: float = 1.0  # after a detection, nothing fires for this long

    @classmethod
    def from_manifest(cls, manifest: dict) -> "DetectionParams":
        given = manifest.get("detection", {})
        return cls(**{key: given[key] for key in asdict(cls()) if key in given})

    def to_manifest(self, *, geometry: StreamGeometry, window_samples: int, sample_rate: int) -> dict:
        """The parameters plus the derived figures an app needs, for manifest.json's ``detection``."""
        hops = window_samples // geometry.hop
        time = {"continuous": "centre of the frame read: frame * hop_samples / sample_rate",
                "staggered": "centre of the window: (end_sample - window_samples / 2) / sample_rate"}[self.design]
        return {**asdict(self), "model": DESIGN_MODELS[self.design], "window_samples": window_samples,
                "stride_samples": hops // self.streams * geometry.hop, "hop_samples": geometry.hop,
                "flush_hops": geometry.delay, "sample_rate": sample_rate, "time": time}


@dataclass(frozen=True)
class Detection:
    time_s: float  # centre of the frame (continuous) or window (staggered) that fired
    label: str
    score: float


class WindowScorer:
    """Step 1, staggered: ``streams`` staggered streaming states. ``push(hop)`` -> [(time_s, scores [C])]
    of the windows that this hop completes (none, or one when window/hop is a multiple of streams)."""

    def __init__(self, step, geometry: StreamGeometry, *, window_samples: int, streams: int, sample_rate: int):
        self.geometry, self.window_samples, self.sample_rate = geometry, window_samples, sample_rate
        self.hops_per_window = window_samples // geometry.hop
        self.stride = self.hops_per_window // streams
        self.streams = [Stream(step, geometry) for _ in range(streams)]
        self.hops_seen = 0

    def push(self, hop_audio: np.ndarray) -> list[tuple[float, np.ndarray]]:
        k, done = self.hops_seen, []
        for s, stream in enumerate(self.streams):
            if k < s * self.stride:
                continue  # stream s starts s strides late
            stream.push(hop_audio)
            if (k - s * self.stride) % self.hops_per_window == self.hops_per_window - 1:  # its window is complete
                end = (k + 1) * self.geometry.hop
                done.append((window_time_s(end, self.window_samples, self.sample_rate), stream.flush()))
                stream.reset()
        self.hops_seen += 1
        return done


class ContinuousScorer:
    """Step 1, continuous: one streaming state, never reset. ``push(hop)`` -> [(time_s, scores [C])] when
    this hop completes a log-mel frame f with (f + 1) a multiple of the stride (hop k completes frame
    k - delay + 1; see StreamGeometry)."""

    def __init__(self, step, geometry: StreamGeometry, *, stride_hops: int, sample_rate: int):
        self.geometry, self.stride, self.sample_rate = geometry, stride_hops, sample_rate
        self.stream = Stream(step, geometry)
        self.hops_seen = 0

    def push(self, hop_audio: np.ndarray) -> list[tuple[float, np.ndarray]]:
        self.stream.push(hop_audio)
        frame = self.hops_seen - self.geometry.delay + 1
        self.hops_seen += 1
        if frame >= 0 and (frame + 1) % self.stride == 0:
            return [(frame * self.geometry.hop / self.sample_rate, self.stream.scores)]
        return []


class Smoother:
    """Step 3: the mean of the last ``windows`` score vectors."""

    def __init__(self, windows: int):
        self.recent = deque(maxlen=max(1, windows))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        self.recent.append(np.asarray(scores, np.float64))
        return np.mean(self.recent, axis=0)


def smoothed_rows(scores, windows: int, classes: int) -> np.ndarray:
    """Step 3 over a whole recording: its score vectors [N, classes] through a fresh ``Smoother(windows)``."""
    smoother = Smoother(windows)
    return np.asarray([smoother(row) for row in scores]).reshape(len(scores), classes)


class Picker:
    """Step 4: threshold the best keyword if it is armed, then stay muted for ``refractory_s``; a keyword
    that fired is armed again once its score falls below the threshold."""

    def __init__(self, labels: list[str], *, threshold: float, refractory_s: float):
        self.labels, self.threshold, self.refractory_s = labels, threshold, refractory_s
        self.keyword_ids = [i for i, label in enumerate(labels) if label not in NON_KEYWORDS]
        self.muted_until = -np.inf
        self.armed = [True] * len(labels)

    def __call__(self, time_s: float, smoothed: np.ndarray) -> Detection | None:
        for i in self.keyword_ids:
            if smoothed[i] < self.threshold:
                self.armed[i] = True
        best = max(self.keyword_ids, key=lambda i: smoothed[i])
        if smoothed[best] >= self.threshold and time_s >= self.muted_until and self.armed[best]:
            self.muted_until = time_s + self.refractory_s
            self.armed[best] = False
            return Detection(time_s=float(time_s), label=self.labels[best], score=float(smoothed[best]))
        return None


class Detector:
    """Steps 1-4 on a stream of audio of any length: ``feed(samples)`` -> the detections found in it.
    Samples that don't fill a hop wait for the next call."""

    def __init__(self, step, geometry: StreamGeometry, labels: list[str], params: DetectionParams, *,
                 window_samples: int, sample_rate: int):
        if params.design == "continuous":
            self.scorer = ContinuousScorer(step, geometry, stride_hops=window_samples // geometry.hop // params.streams,
                                           sample_rate=sample_rate)
        elif params.design == "staggered":
            self.scorer = WindowScorer(step, geometry, window_samples=window_samples, streams=params.streams,
                                       sample_rate=sample_rate)
        else:
            raise ValueError(f"detection design {params.design!r}: expected one of {', '.join(DESIGN_MODELS)}")
        self.smoother = Smoother(params.smooth_windows)
        self.picker = Picker(labels, threshold=params.threshold, refractory_s=params.refractory_s)
        self.pending = np.zeros(0, np.float32)  # samples short of a hop, kept for the next call

    def windows(self, samples: np.ndarray):
        """Steps 1-3: yields (time_s, smoothed scores [C]) for each score vector the samples complete."""
        audio = np.concatenate([self.pending, np.asarray(samples, np.float32)])
        hop = self.scorer.geometry.hop
        whole = len(audio) // hop * hop
        self.pending = audio[whole:]
        for start in range(0, whole, hop):
            for time_s, scores in self.scorer.push(audio[start:start + hop]):
                yield time_s, self.smoother(scores)

    def feed(self, samples: np.ndarray) -> list[Detection]:
        """Steps 1-4: the detections that these samples complete."""
        return [d for d in (self.picker(t, row) for t, row in self.windows(samples)) if d]


def window_time_s(end_sample: int, window_samples: int, sample_rate: int) -> float:
    """Step 2: a window's time is its centre."""
    return (end_sample - window_samples / 2) / sample_rate


def pick_detections(times_s: np.ndarray, smoothed: np.ndarray, labels: list[str], *, threshold: float,
                    refractory_s: float) -> list[Detection]:
    """Step 4 over precomputed smoothed windows [W, C]. Only windows whose best keyword reaches the
    threshold can fire (the refractory clock moves only on a detection); a window below it only arms every
    keyword, as any number of them in a row do. So the windows stepped are those at or above the threshold
    and the one just before each: the same detections, far fewer steps when sweeping thresholds over
    hours of windows."""
    picker = Picker(labels, threshold=threshold, refractory_s=refractory_s)
    smoothed = np.asarray(smoothed)
    if not len(smoothed):
        return []
    above = np.flatnonzero(smoothed[:, picker.keyword_ids].max(axis=1) >= threshold)
    stepped = np.union1d(above, above[above > 0] - 1)
    return [d for d in (picker(times_s[i], smoothed[i]) for i in stepped) if d]
