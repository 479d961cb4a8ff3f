"""Command line: ./run demo | all | STAGE | status | predict | score | detect | live | bench  (./run test is pytest)."""
from __future__ import annotations

import argparse
import sys

STAGE_NAMES = ["synth", "download", "prepare", "features", "train", "evaluate", "export", "verify"]


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=5 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="./run", description="Speech-command recognition pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="every stage on the embedded default (synthesized voices) -> exports/demo/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _config_args(sub.add_parser("all", help="every stage of a config"))
    for name in STAGE_NAMES:
        _config_args(sub.add_parser(name, help=f"the {name} stage and what it needs"))
    _config_args(sub.add_parser("status", help="which stages are up to date"))
    p = sub.add_parser("predict", help="label and score per audio file")
    p.add_argument("model", help=".tflite file, SavedModel folder, or a run folder (exports/demo)")
    p.add_argument("files", nargs="+", help="audio files (wav, flac, ogg; any rate; stereo is mixed down)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p = sub.add_parser("score", help="accuracy of a model on your own recordings (WORD/ folders or a path,label CSV)")
    p.add_argument("model", help=".tflite file, SavedModel folder, or a run folder (exports/demo)")
    p.add_argument("data", help="folder of WORD/<clip> audio files, or a CSV file with the header path,label")
    p.add_argument("--out", default=None, help="folder for score.json and confusion_matrix.png (default: <DATA>_score/)")
    p.add_argument("--json", action="store_true", help="the result as one JSON document instead of a table")
    p = sub.add_parser("detect", help="time-stamped keyword detections in a long recording (streaming model)")
    p.add_argument("model", help="model_streaming*.tflite or a run folder")
    p.add_argument("file")
    p.add_argument("--threshold", type=float, default=None, help="smoothed-score threshold (default: the run's)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("bench", help="feature, TFLite, training and size benchmarks -> <run>/bench.json")
    _config_args(p)
    p.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    p = sub.add_parser("live", help="serve the live keyword-spotting page (microphone or dropped file) on 127.0.0.1")
    p.add_argument("run", nargs="?", default="exports/demo", help="run folder (default: exports/demo)")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pipeline.config import DEFAULT_CONFIG, ConfigError, load_config
    from pipeline.errors import known_error_message

    try:
        if args.command == "predict":
            from pipeline.commands import predict

            return predict.main(model=args.model, files=args.files, top_k=args.top_k, as_json=args.json)
        if args.command == "score":
            from pipeline.commands import score

            return score.main(model=args.model, data=args.data, out=args.out, as_json=args.json)
        if args.command == "detect":
            from pipeline.commands import detect

            return detect.main(model=args.model, file=args.file, threshold=args.threshold, as_json=args.json)
        if args.command == "live":
            from pipeline.commands import live

            return live.main(run=args.run, port=args.port)
        cfg = load_config(getattr(args, "config", None) or DEFAULT_CONFIG, args.overrides)
        from pipeline import runner

        if args.command == "status":
            return runner.status(cfg)
        if args.command == "bench":
            from pipeline.commands import bench

            return bench.run(cfg, quick=args.quick)
        if args.command in ("demo", "all"):
            return runner.run_stages(cfg, [runner.stages(cfg)[-1].name])
        return runner.run_stages(cfg, [args.command])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        message = known_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
