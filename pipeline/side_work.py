"""Work the train stage hands to a side process while the 1-s model trains.

On 2 CPU cores the 1-s model's XLA training steps keep about 1.2 of them busy. Two later jobs need no
model: the continuous design's training sequences (``continuous.training_sequences``, ~20-30 s on both
cores) and the always-on benchmark's recordings that verify scores (``long_audio.make_recordings``,
~30 s). A side process at the lowest CPU priority makes them in the idle time:
- the sequences into the train stage's work folder (``SEQUENCES``, written under a temporary name and
  renamed), which the train stage loads once the 1-s model is done;
- the recordings into their own cache folder, where verify finds them.
Its output goes to ``side_work.log`` in the work folder, so its progress bars don't interleave with the
training's. Whatever it did not finish (it failed, or was stopped) is done later where it always was:
the sequences by the train stage, the recordings by verify. Results are the same either way: both jobs
are seeded by the config alone.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from pipeline.config import Config

SEQUENCES = "continuous_sequences.npz"
LOG = "side_work.log"


def jobs(cfg: Config) -> list[str]:
    """What the side process makes under this config (nothing: no side process)."""
    return [what for what, on in (("the continuous sequences", cfg.train.continuous_sequences > 0),
                                  ("the benchmark recordings", cfg.export.long_audio_minutes > 0)) if on]


def start(cfg: Config, spec: dict, labels: list[str], work: Path):
    """Start the side process (a spawn Process, not a daemon: it runs worker pools of its own)."""
    (work / SEQUENCES).unlink(missing_ok=True)  # never an earlier run's sequences
    process = multiprocessing.get_context("spawn").Process(target=_main, args=(cfg, spec, labels, str(work)),
                                                           name="side-work")
    process.start()
    return process


def finish(process, cfg: Config, work: Path) -> tuple[tuple[tuple, tuple] | None, float | None]:
    """Wait for the side process; returns (the continuous sequences or None, the seconds they took or None)."""
    t0 = time.time()
    if process.is_alive():
        print("train: waiting for the side process (continuous sequences, benchmark recordings) ...", flush=True)
    process.join()
    log = work / LOG
    if process.exitcode != 0:
        last = log.read_text().strip().splitlines()[-1:] if log.is_file() else []
        print(f"train: the side process failed (exit {process.exitcode}{': ' + last[0] if last else ''}); "
              f"its work is done in turn instead")
    else:
        print(f"train: the side process had made {' and '.join(jobs(cfg))} (waited {time.time() - t0:.0f} s for it)")
    path = work / SEQUENCES
    if not path.is_file():
        return None, None
    with np.load(path) as z:
        built = ((z["x"], z["y"], z["w"]), (z["vx"], z["vy"], z["vw"]))
        seconds = float(z["seconds"])
    path.unlink()
    return built, seconds


def stop(process) -> None:
    """Stop the side process and its worker pools (the train stage failed or was interrupted)."""
    if process.is_alive():
        process.terminate()  # its pools' workers exit when their parent's pipes close
    process.join()


def _main(cfg: Config, spec: dict, labels: list[str], work: str) -> None:
    work = Path(work)
    os.nice(19)  # only the cycles the training leaves idle; its worker pools inherit this
    log = open(work / LOG, "w", buffering=1)
    sys.stdout = sys.stderr = log
    try:
        from pipeline import continuous, long_audio
        from pipeline.feature_spec import FeatureSpec

        feature_spec = FeatureSpec.from_dict(spec)
        workers = cfg.features.workers or None
        if cfg.train.continuous_sequences > 0:
            t0 = time.time()
            (x, y, w), (vx, vy, vw) = continuous.training_sequences(cfg, feature_spec, labels, workers=workers)
            partial = work / (SEQUENCES + ".partial.npz")
            np.savez(partial, x=x, y=y, w=w, vx=vx, vy=vy, vw=vw, seconds=time.time() - t0)
            partial.replace(work / SEQUENCES)
            print(f"side work: {len(x)} + {len(vx)} continuous sequences in {time.time() - t0:.1f} s")
        if cfg.export.long_audio_minutes > 0:
            t0 = time.time()
            folder = long_audio.make_recordings(cfg, feature_spec)
            print(f"side work: the benchmark recordings in {folder} ({time.time() - t0:.1f} s)")
    except BaseException:
        traceback.print_exc()
        print(f"side work: {traceback.format_exc().strip().splitlines()[-1]}")
        log.flush()
        sys.exit(1)
