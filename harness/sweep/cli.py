"""The main job: ``python -m harness.sweep.cli SWEEP.yaml [key=value ...] [--address ADDR] [--resume] [--dry-run]``.

Loads and validates the sweep, prints the plan, runs it on Ray Tune (local Ray by
default) and ends with the leaderboard table. A bad key exits 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harness.sweep.config import ConfigError, load_sweep
from harness.sweep.runner import plan_sweep, run_sweep, trial_resources


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep.cli", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", help="a sweep YAML, e.g. sweeps/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100 seeds=[0]")
    parser.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else start Ray locally)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted sweep: skip finished trials")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any trial failed")
    parser.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard at the end")
    parser.add_argument(
        "--from-row", nargs=2, metavar=("RESULTS_FILE", "ROW"),
        help="re-run one row of a trials/*.parquet file from its own fields and check it reproduces",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more Ray output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.from_row:
        return _reproduce(*args.from_row)
    if not args.sweep:
        print("error: give a sweep YAML (or --from-row RESULTS_FILE ROW)", file=sys.stderr)
        return 2
    try:
        sweep = load_sweep(args.sweep, args.overrides)
        plan = plan_sweep(sweep)
        if plan.done and not args.resume and not args.dry_run:
            raise ConfigError(
                f"{plan.root} already holds {len(plan.done)} finished trial(s) of this sweep; "
                "pass --resume to run only the rest, or set results_dir=... for a fresh folder"
            )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(plan.describe(trial_resources(sweep, 0) if args.dry_run else {"cpu": sweep.resources.cpu}))
    if args.dry_run:
        return 0
    failed = 0
    if plan.pending:
        try:
            outcome = run_sweep(sweep, plan, address=args.address, verbose=args.verbose)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(outcome.describe())
        failed = outcome.failed
    failed += _finish(plan.root, show_leaderboard=not args.no_leaderboard)
    return 1 if (failed and (args.strict or sweep.strict)) else 0


def _reproduce(path: str, row: str) -> int:
    """--from-row: exit 0 when the re-run lands inside the recorded interval, 1 when not, 2 on bad input."""
    from harness.trial.reproduce import reproduce_row

    try:
        outcome = reproduce_row(path, int(row))
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(outcome.describe())
    return 0 if outcome.within_interval else 1


def _finish(root: str, show_leaderboard: bool) -> int:
    """Print where the rows are (and the leaderboard); returns the number of failed trials."""
    from harness.report import results

    rows = results.load(root)
    failed = rows[rows["status"] == "failed"]
    print(f"{len(rows)} condition rows from {rows['trial_id'].nunique()} trials in {root}/trials/")
    for _, row in failed.drop_duplicates("trial_id").iterrows():
        print(f"FAILED {row['trial_id']}: {str(row['error']).splitlines()[0]}", file=sys.stderr)
    if show_leaderboard:
        from harness.report import leaderboard

        leaderboard.main([root])
    return failed["trial_id"].nunique()


if __name__ == "__main__":
    sys.exit(main())
