"""Offline YouTube-VIS scoring.

    python -m iai_d2.evaluation --gt valid.json --results results.json|submission.zip [--per-category]

Prints a metric table and, as the last line, a JSON object with AP, AP50, AP75, APs, APm, APl,
AR1, AR10, AR100 (percent; null where undefined). Bad input: a message on stderr and exit code 2.
"""
import argparse
import json
import math
import sys

from .ytvis_eval import evaluate_ytvis, per_category_table, summary_table


def main(argv=None):
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m iai_d2.evaluation", description=__doc__.split("\n")[0])
    parser.add_argument("--gt", required=True, help="ground-truth YTVIS json with annotations")
    parser.add_argument("--results", required=True, help="results.json or submission.zip")
    parser.add_argument("--per-category", action="store_true", help="also print per-category AP")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_ytvis(args.gt, args.results)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_table(metrics))
    if args.per_category:
        print(per_category_table(metrics))
    print(json.dumps({k: (None if math.isnan(v) else v) for k, v in metrics.summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
