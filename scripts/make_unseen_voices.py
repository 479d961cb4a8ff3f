"""Write the unseen-voice test set (pipeline/unseen_voices.py) for a config, to score a model on it:

    .venv/bin/python scripts/make_unseen_voices.py --out data/unseen_voices
    ./run score exports/demo data/unseen_voices                    # both groups
    ./run score exports/demo data/unseen_voices/accents.csv        # one group
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.unseen_voices import build  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="the config whose voices, words and ranges to avoid (default: demo)")
    p.add_argument("--set", action="append", default=[], help="config override key=value")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variants-per-voice", type=int, default=6)
    args = p.parse_args()
    try:
        counts = build(load_config(args.config, args.set), args.out, variants_per_voice=args.variants_per_voice)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"unseen voices: {counts['accents']} accent clips, {counts['settings']} settings clips, "
          f"{counts['failed']} failed -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
