"""The make-like stage runner, on doit.

Each stage declares what it reads (file_dep: the stamps of every stage before it), what it writes
(targets: its outputs and its own stamp) and which config keys change its result (doit
``config_changed``). doit skips a stage while all three are unchanged, so a second run with nothing
changed does no work, and changing a training key re-runs train and what follows, not features.

The stamp ``<run>/.stages/<stage>.json`` is written after the stage's outputs are complete and holds
content hashes of them, never times: a stage that runs again and writes the same outputs leaves its
stamp unchanged, and doit (which compares a file_dep's checksum when its mtime moved) then leaves the
following stages alone. Keys that change no result (``config.NO_RESULT_KEYS``: worker counts, batch
sizes of the feature pass) re-run nothing; keys that only verify reads re-run verify alone.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from doit.reporter import ConsoleReporter
from doit.tools import config_changed

from pipeline.config import SPEC_AUGMENT_KEYS, SYNTH_KEYS, TRAIN_KEYS, Config, result_values
from pipeline.dataset import SPLITS
from pipeline.io import sha256_file, tree_listing_sha256, write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    config_keys: tuple[str, ...]  # config sections / dotted keys whose change re-runs the stage
    outputs: tuple[Path, ...]  # what must exist for the stage to count as done
    content: tuple[Path, ...]  # what the stamp hashes: the outputs that later stages read
    ignore: tuple[str, ...] = ()  # dotted keys inside config_keys' sections that do not change this stage


def stages(cfg: Config) -> list[Stage]:
    """The stages of a config, in order. The dataset comes from synth (demo) or download."""
    run_dir, prepared = cfg.run_dir, cfg.prepared_dir
    if cfg.dataset.source == "synth":
        first = Stage("synth", "synthesize the demo dataset with espeak-ng", SYNTH_KEYS, (cfg.dataset_dir,),
                      (cfg.dataset_dir,))
    else:
        folders = (cfg.dataset_dir,) + ((cfg.test_dataset_dir,) if cfg.dataset.test_url else ())
        first = Stage("download", "download, verify and extract the dataset archives", ("dataset",), folders, folders)
    # the validation recordings pick the threshold (verify), and with continuous_candidates > 1 also the model (train)
    recording_keys = ("export.long_audio_minutes", "export.long_audio_validation_recordings",
                      "export.long_audio_quiet_recordings", "export.long_audio_words")
    picks_model = recording_keys if cfg.train.continuous_candidates > 1 else ()
    return [
        first,
        Stage("prepare", "standard splits, _silence_/_unknown_, split report", ("dataset", "task", "run.seed"),
              (prepared / "report.json",), tuple(prepared / f"{s}.csv" for s in SPLITS) + (prepared / "report.json",)),
        Stage("features", "librosa log-mel cache (+ augmented copies)", ("features", "augment"),
              (cfg.features_dir / "stats.json",), (cfg.features_dir,), ignore=SPEC_AUGMENT_KEYS),
        Stage("train", "train the stacked GRU", TRAIN_KEYS + picks_model,
              (run_dir / "model.keras", run_dir / "train_summary.json"), (run_dir / "model.keras",)),
        Stage("evaluate", "test-split metrics and plots", (),
              (run_dir / "metrics.json", run_dir / "confusion_matrix.png"), (run_dir / "metrics.json",)),
        Stage("export", "SavedModel + TFLite variants", ("export.int8_calibration_examples",),
              (run_dir / "export.json",), (run_dir / "export.json",)),
        Stage("verify", "run every artifact on the test split, long-audio detection, write manifest.json",
              recording_keys, (run_dir / "manifest.json",),
              (run_dir / "manifest.json",)),
    ]


def stamp_path(cfg: Config, stage: str) -> Path:
    return cfg.run_dir / ".stages" / f"{stage}.json"


def content_hashes(paths: tuple[Path, ...]) -> dict[str, str]:
    """sha256 of each file; a folder (a dataset or the feature cache, gigabytes at full size, and named
    by a hash of the config that made it) by its file names and sizes. A non-chief training worker
    writes nothing: its outputs are "missing"."""
    return {str(p): tree_listing_sha256(p) if p.is_dir() else sha256_file(p) if p.is_file() else "missing"
            for p in paths}


def _action(cfg: Config, stage: Stage, errors: list[str]):
    def action():
        from pipeline.errors import known_error_message

        module = importlib.import_module(f"pipeline.stages.{stage.name}")
        t0 = time.time()
        try:
            module.run(cfg)
        except Exception as e:  # a known error is one line; anything else keeps its traceback
            message = known_error_message(e)
            if message is None:
                raise
            errors.append(f"{stage.name}: {message}")
            return False
        stamp = stamp_path(cfg, stage.name)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp.with_name(f"{stage.name}.log.json"),  # when and how long: not a dependency
                          {"seconds": round(time.time() - t0, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        stamp_text = json.dumps({"stage": stage.name, "content": content_hashes(stage.content)}, indent=1)
        if not stamp.is_file() or stamp.read_text() != stamp_text:  # same content: leave the file alone
            write_text_atomic(stamp, stamp_text)
        return True

    return action


class StageReporter(ConsoleReporter):
    """One line per stage: ran / up to date; failures are reported by the CLI as one line."""

    desc = "stage lines"

    def execute_task(self, task):
        self.write(f"==> {task.name}\n")

    def skip_uptodate(self, task):
        self.write(f"--  {task.name}: up to date\n")

    def add_failure(self, task, fail):
        self.failures.append({"task": task, "exception": fail})

    def complete_run(self):
        for failure in self.failures:
            text = failure["exception"].get_msg()
            if "Python Task failed" in text and "returned False" in text:
                continue  # a known error, already turned into one line
            sys.stderr.write(text)


def task_namespace(cfg: Config, errors: list[str]) -> dict:
    """A doit module namespace: one task_<stage> generator per stage."""
    ns = {}
    before: list[Stage] = []
    for stage in stages(cfg):
        file_dep = [str(stamp_path(cfg, s.name)) for s in before]  # every earlier stage: what it may read
        keys = result_values(cfg, stage.config_keys, stage.ignore)
        task = {
            "basename": stage.name, "doc": stage.doc, "actions": [_action(cfg, stage, errors)],
            "file_dep": file_dep, "targets": [str(p) for p in stage.outputs] + [str(stamp_path(cfg, stage.name))],
            "uptodate": [config_changed(json.dumps(keys, sort_keys=True, default=str))], "verbosity": 2,
        }
        ns[f"task_{stage.name}"] = (lambda t=task: t)
        before.append(stage)
    ns["DOIT_CONFIG"] = {"dep_file": str(cfg.run_dir / ".stages" / "doit.sqlite"), "backend": "sqlite3",
                         "reporter": StageReporter, "verbosity": 2}
    return ns


def _doit(cfg: Config, args: list[str], errors: list[str]) -> int:
    import absl.logging  # noqa: F401  bind its handler to the real stderr before doit wraps the streams
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    (cfg.run_dir / ".stages").mkdir(parents=True, exist_ok=True)
    return DoitMain(ModuleTaskLoader(task_namespace(cfg, errors)), config_filenames=()).run(args)


def run_stages(cfg: Config, targets: list[str]) -> int:
    """Run the named stages (and what they need) unless up to date. Returns an exit code."""
    errors: list[str] = []
    names = [s.name for s in stages(cfg)]
    for target in targets:
        if target not in names:
            print(f"error: stage {target!r} is not in this config's pipeline ({' -> '.join(names)})", file=sys.stderr)
            return 2
    t0 = time.time()
    code = _doit(cfg, ["run", *targets], errors)
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if code == 0:
        print(f"done in {time.time() - t0:.1f} s; outputs in {cfg.run_dir}")
    return code


def status(cfg: Config) -> int:
    """Print which stages are up to date."""
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = _doit(cfg, ["list", "--all", "--status"], [])
    state = {}
    for line in buffer.getvalue().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("R", "U", "I"):
            state[parts[1]] = {"R": "needs to run", "U": "up to date", "I": "ignored"}[parts[0]]
    for stage in stages(cfg):
        print(f"{stage.name:10s} {state.get(stage.name, 'unknown'):14s} {stage.doc}")
    return code
