"""Every wmbench command, in one place: ``python -m harness COMMAND ...``.

    python -m harness run SWEEP.yaml [key=value ...] [--address ADDR] [--resume] [--dry-run] [--strict]
    python -m harness run --from-row RESULTS_FILE ROW
    python -m harness leaderboard RESULTS [RESULTS|GLOB ...] [--out DIR] [--baseline RESULTS]
    python -m harness surprise SWEEP.yaml [key=value ...]
    python -m harness stress rarity RESULTS [--no-surprise] | stress search SWEEP.yaml [--budget N] [--axis ...]
    python -m harness replay FAILURES_FILE ROW [--out DIR] [--controller random|oracle]
    python -m harness replay-failures RESULTS [--top N]
    python -m harness datasets list | inspect KEY | preview KEY [--episode N] --out FILE.png|.gif|.mp4
    python -m tasks.collect TASK [--episodes N] ...   (data ahead of a sweep; the tasks layer's own command)

``python -m harness.run ...`` is ``python -m harness run ...`` (the README's and Makefile's form).
A user-fixable problem (a bad key, a missing file) prints one line and exits 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from harness.eval import replay, stress
from harness.eval.cases import case_fingerprint
from harness.eval.controllers import REFERENCE_CONTROLLERS
from harness.eval.surprise import case_surprise, evaluate_surprise, surprise_table
from harness.report import leaderboard, results
from harness.sweep.config import ConfigError, SweepConfig, load_sweep
from harness.sweep.runner import SweepStopped, driver_lock, plan_sweep, run_sweep, trial_resources
from harness.trial.parts import build_trial, trial_data
from harness.trial.reproduce import RowError, reproduce_row
from harness.trial.spec import TrialSpec
from tasks import catalog

DEFAULT_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (command first), run the command, return its exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow the options too (argparse would take them for unknown arguments).
    if extra and hasattr(args, "overrides") and not any(token.startswith("-") for token in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.command_fn(args)
    except (ConfigError, RowError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command_fn=fn)
        return sub

    run = command("run", _run, "run a sweep on Ray Tune (local Ray by default) and print the leaderboard")
    run.add_argument("sweep", nargs="?", help="a sweep YAML, e.g. sweeps/quickstart.yaml")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100 seeds=[0]")
    run.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else start Ray locally)")
    run.add_argument("--resume", action="store_true", help="finish an interrupted sweep: skip finished trials")
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.add_argument("--strict", action="store_true", help="exit non-zero if any trial failed")
    run.add_argument("--no-leaderboard", action="store_true", help="skip the leaderboard at the end")
    run.add_argument(
        "--from-row", nargs=2, metavar=("RESULTS_FILE", "ROW"),
        help="re-run one row of a trials/*.parquet file from its own fields and check it reproduces",
    )  # fmt: skip
    run.add_argument("-v", "--verbose", action="count", default=1,
                     help="-v: add Ray's status table and the trials' logs; -vv: Ray's verbose table")  # fmt: skip

    board = command("leaderboard", _leaderboard, "compare the models of results folders (Markdown, HTML, PNG)")
    board.add_argument(
        "results", nargs="+",
        help="results folders written by `run` (or globs); several make one board where protocol and cases agree",
    )  # fmt: skip
    board.add_argument("--out", help="where to write the leaderboard (default: RESULTS/leaderboard/ for one folder)")
    board.add_argument("--baseline", help="another results folder to compare against; regressions are marked")

    surprise = command("surprise", _surprise, "surprise at impossible events of every trained model of a sweep")
    surprise.add_argument("sweep", help="a sweep YAML, e.g. sweeps/quickstart.yaml")
    surprise.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seeds=[0]")
    surprise.add_argument("--device", default=DEFAULT_DEVICE)

    stress_parser = command("stress", _stress, "rare-state failure mining: rarity buckets, adversarial search")
    modes = stress_parser.add_subparsers(dest="mode", required=True)
    rarity = modes.add_parser("rarity", help="success by rarity bucket from a results folder")
    rarity.add_argument("root", help="a results folder, e.g. results/robustness")
    rarity.add_argument("--buckets", type=int, default=4)
    rarity.add_argument("--k", type=int, default=stress.RARITY_K)
    rarity.add_argument("--no-surprise", action="store_true",
                        help="skip each world model's surprise per case (it loads every trial's model)")  # fmt: skip
    rarity.add_argument("--device", default=DEFAULT_DEVICE, help="where the models score surprise")
    search = modes.add_parser("search", help="adversarial search for failures of each trial of a sweep")
    search.add_argument("sweep", help="a sweep YAML, e.g. sweeps/stress.yaml")
    search.add_argument("overrides", nargs="*", help="key=value overrides of the sweep")
    search.add_argument("--budget", type=int, default=32, help="search trials per sweep trial")
    search.add_argument("--repeats", type=int, default=2, help="episodes (fresh noise) per search trial")
    search.add_argument("--axis", action="append", default=[], metavar="NAME=LOW:HIGH",
                        help=f"a perturbation bound (repeatable); default {stress.DEFAULT_AXES}")  # fmt: skip
    search.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else local Ray)")
    search.add_argument("--device", default=DEFAULT_DEVICE)

    replayed = command("replay", _replay, "replay one mined failure case and draw it as an image strip")
    replayed.add_argument("file", help="a failures Parquet file, e.g. results/stress/failures/<trial>.parquet")
    replayed.add_argument("row", type=int, help="the row to replay (0 = the hardest case found)")
    replayed.add_argument("--out", default=".", help="folder for the image strip (default: here)")
    replayed.add_argument("--controller", choices=REFERENCE_CONTROLLERS, help="replay with a reference controller")

    mined = command("replay-failures", _replay_failures, "replay the hardest mined failures of every trial, "
                    "drawn where the leaderboard links them (RESULTS/strips/, RESULTS/replays.parquet)")  # fmt: skip
    mined.add_argument("root", help="a results folder whose failures/ the stress search wrote, e.g. results/stress")
    mined.add_argument("--top", type=int, default=3, help="rows per trial, hardest first (default 3)")

    checked = command("check-model", _check_model, "check a model (zoo name, import path or entry point) against "
                      "the WorldModel contract on random tensors, before a sweep is spent on it")  # fmt: skip
    checked.add_argument("name", help="e.g. lewm, or mypkg.world_model:build")
    checked.add_argument("--size", default="tiny", help="the size preset to build (default tiny)")
    checked.add_argument("--image-size", type=int, default=32)
    checked.add_argument("--action-dim", type=int, default=4, help="one action block: frameskip × the action width")
    checked.add_argument("--history", type=int, default=2)

    datasets = command("datasets", _datasets, "the cached datasets: list them, inspect one, preview its frames")
    datasets.add_argument("--cache-dir", help="cache root (default: $WMBENCH_CACHE, else .cache/wmbench)")
    actions = datasets.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every cached dataset: task, recipe, episodes, frame size, size, when written")
    inspected = actions.add_parser("inspect", help="shapes, policy success, action statistics, state ranges, shards")
    inspected.add_argument("key", help="a dataset key, or a prefix of one that no other key shares")
    previewed = actions.add_parser("preview", help="an episode as an image strip (.png) or animation (.gif, .mp4)")
    previewed.add_argument("key", help="a dataset key, or a prefix of one that no other key shares")
    previewed.add_argument("--episode", type=int, default=0, help="which episode (default 0)")
    previewed.add_argument("--out", required=True, help="FILE.png (a strip of frames), FILE.gif or FILE.mp4")
    previewed.add_argument("--frames", type=int, default=catalog.PREVIEW_FRAMES, help="frames in a .png strip")
    return parser


# --- run ------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    if args.from_row:
        return _reproduce(*args.from_row)
    if not args.sweep:
        raise ConfigError("give a sweep YAML (or --from-row RESULTS_FILE ROW)")
    sweep = load_sweep(args.sweep, args.overrides)
    if args.dry_run:
        print(plan_sweep(sweep).describe(trial_resources(sweep, 0)))
        return 0
    with driver_lock(sweep):  # planned under the lock: two drivers never run the same trials
        try:
            return _drive(args, sweep)
        except KeyboardInterrupt:  # Ctrl-C: one line, not Ray's traceback; finished trials are already on disk
            print(f"interrupted: {_where_it_stopped(sweep)}", file=sys.stderr)
            return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
        except SweepStopped as error:  # one line, not Ray Tune's traceback; finished trials are already on disk
            print(f"the sweep stopped: {error}; {_where_it_stopped(sweep)}", file=sys.stderr)
            return 1


def _where_it_stopped(sweep: SweepConfig) -> str:
    """How far a stopped sweep got, read from its results folder, and what to do next."""
    plan = plan_sweep(sweep)
    return f"{len(plan.done)} of {len(plan.trials)} trials finished; rerun with --resume"


def _drive(args: argparse.Namespace, sweep: SweepConfig) -> int:
    plan = plan_sweep(sweep)
    if plan.done and not args.resume:
        raise ConfigError(
            f"{plan.root} already holds {len(plan.done)} finished trial(s) of this sweep; "
            "pass --resume to run only the rest, or set results_dir=... for a fresh folder"
        )
    print(plan.describe({"cpu": sweep.resources.cpu}))
    failed = 0
    if plan.pending:
        outcome = run_sweep(sweep, plan, address=args.address, verbose=args.verbose)
        print(outcome.describe())
        failed = outcome.failed
        for trial_id, error in outcome.errors.items():  # its worker died, or its rows could not be written
            reason = error.rstrip(".")
            print(f"NOT FINISHED {trial_id}: {reason}; it wrote no rows, --resume runs it again", file=sys.stderr)
    failed += _finish(plan.root, show_leaderboard=not args.no_leaderboard)
    return 1 if (failed and (args.strict or sweep.strict)) else 0


def _reproduce(path: str, row: str) -> int:
    """--from-row: exit 0 when the re-run lands inside the recorded interval, 1 when not, 2 on bad input."""
    if not row.isdigit():
        raise RowError(f"ROW must be a row number, got {row!r}")
    outcome = reproduce_row(path, int(row))
    print(outcome.describe())
    return 0 if outcome.within_interval else 1


def _finish(root: str, show_leaderboard: bool) -> int:
    """Print where the rows are (and the leaderboard); returns the number of failed trials."""
    rows = results.load(root)
    failed = rows[rows["status"] == "failed"]
    print(f"{len(rows)} condition rows from {rows['trial_id'].nunique()} trials in {root}/trials/")
    for _, row in failed.drop_duplicates("trial_id").iterrows():
        print(f"FAILED {row['trial_id']}: {str(row['error']).splitlines()[0]}", file=sys.stderr)
    if show_leaderboard:
        _print_leaderboard(root, out=None, baseline=None)
    return failed["trial_id"].nunique()


# --- leaderboard ----------------------------------------------------------------------------------


def _leaderboard(args: argparse.Namespace) -> int:
    folders = leaderboard.expand(args.results)
    if len(folders) > 1 and args.out is None:
        raise ConfigError(f"{len(folders)} results folders make one board: give --out DIR for it")
    return _print_leaderboard(folders, args.out, args.baseline)


def _print_leaderboard(roots: str | list[str], out: str | None, baseline: str | None) -> int:
    try:
        board = leaderboard.build(roots, baseline)
    except leaderboard.NoResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in board.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for refusal in board.refused:  # rows of a later folder that cannot be ranked with the board's, and why
        print(refusal.describe(), file=sys.stderr)
    written = leaderboard.write(board, out if out is not None else leaderboard.default_output_dir(board.root))
    print(written["markdown"].read_text(encoding="utf-8"))
    print(f"Wrote {written['markdown']} and {written['html']}", file=sys.stderr)
    return 0


# --- surprise, stress, replay: the eval libraries over a sweep's trials ---------------------------


def _model_trials(sweep_file: str, overrides: list[str]) -> list[TrialSpec]:
    """The sweep's trials of zoo models (reference controllers have no latent to be surprised in)."""
    return [spec for spec in plan_sweep(load_sweep(sweep_file, overrides)).trials if spec.role == "model"]


def _surprise(args: argparse.Namespace) -> int:
    for spec in _model_trials(args.sweep, args.overrides):
        parts = build_trial(spec, args.device)
        figures = evaluate_surprise(
            parts.model, parts.task, parts.heldout, seed=spec.seed, device=args.device,
            frameskip=parts.protocol.frameskip, scaler=parts.windows.scaler,
        )  # fmt: skip
        print(surprise_table(f"{spec.task.name} {spec.model.name} seed {spec.seed}", figures))
    return 0


def _stress(args: argparse.Namespace) -> int:
    if args.mode == "rarity":
        return _rarity(args)
    axes = dict(stress.DEFAULT_AXES)
    for bound in args.axis:
        name, _, span = bound.partition("=")
        low, _, high = span.partition(":")
        try:
            axes[name] = (float(low), float(high))
        except ValueError:
            raise ConfigError(f"--axis {bound!r} must be NAME=LOW:HIGH, e.g. action_noise=0:0.4") from None
    plan = plan_sweep(load_sweep(args.sweep, args.overrides))
    for spec in plan.trials:
        parts = build_trial(spec, args.device)
        target = stress.SearchTarget(
            spec.trial_id, spec.to_json(), spec.seed, parts.task, parts.protocol, parts.controller,
            parts.case_source, _flat_states(parts.train.states), args.device,
        )  # fmt: skip
        storage = str(Path(plan.root.split("://")[-1], "ray"))
        rows = stress.adversarial_search(
            target, args.budget, args.repeats, axes, seed=spec.seed, storage_path=storage, address=args.address
        )
        path = stress.write_failures(rows, plan.root, spec.trial_id)
        print(f"{spec.trial_id}: {int((~rows['success']).sum())} of {len(rows)} searched episodes failed -> {path}")
    return 0


def _rarity(args: argparse.Namespace) -> int:
    def training_states(row: pd.Series) -> np.ndarray:
        return _flat_states(trial_data(TrialSpec.from_dict(json.loads(row["config"]))).train.states)

    episodes, trials = results.load(args.root, results.EPISODES_DIR), results.load(args.root)
    cases, summary = stress.rarity_table(episodes, trials, training_states, args.k, args.buckets)
    ranked = trials[trials["trial_id"].isin(set(cases["trial_id"]))]
    surprise = {} if args.no_surprise else _case_surprise(ranked, args.device)
    rows = stress.rarity_rows(cases, args.k, args.buckets, surprise)
    path = results.write_atomic(results.to_table(rows, results.RarityRow), args.root, results.RARITY_FILE)
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    scored = sum(row.surprise is not None for row in rows)
    print(
        f"{len(rows)} trial × case rows written to {path} ({scored} with the model's surprise); "
        "the leaderboard shows success and surprise by rarity from them"
    )
    return 0


def _case_surprise(trials: pd.DataFrame, device: str) -> dict[tuple[str, int], float]:
    """Each world-model trial's surprise per evaluation case, keyed by (trial id, case seed): the trial's model built
    as `surprise` and `replay` build it (build_trial: from the checkpoint cache the sweep filled), scored along each
    case's recorded frames in the collection the cases came from. A trial whose rebuilt cases are not the ones it
    ran (its case fingerprint differs) gets none, with a warning."""
    surprise: dict[tuple[str, int], float] = {}
    for row in trials[trials["status"] == "ok"].drop_duplicates("trial_id").itertuples():
        spec = TrialSpec.from_dict(json.loads(row.config))
        if spec.role != "model":  # a reference controller has no latent to be surprised in
            continue
        parts = build_trial(spec, device)
        fingerprint = case_fingerprint(parts.task, parts.case_source.key, parts.cases)
        if row.case_fingerprint and row.case_fingerprint != fingerprint:
            print(
                f"warning: {row.trial_id}: its cases rebuilt today are not the ones it ran (case fingerprint "
                f"{fingerprint}, recorded {row.case_fingerprint}); no surprise recorded for it",
                file=sys.stderr,
            )
            continue
        values = case_surprise(
            parts.model, parts.case_source, parts.cases, parts.protocol, parts.windows.scaler, device
        )
        surprise |= {(row.trial_id, case.case_seed): float(v) for case, v in zip(parts.cases, values, strict=True)}
    return surprise


def _flat_states(states: np.ndarray) -> np.ndarray:
    """(E, L+1, S) -> (E·(L+1), S): every state of a collection, the reference rarity is measured against."""
    return states.reshape(-1, states.shape[-1])


def _replay(args: argparse.Namespace) -> int:
    rows = pd.read_parquet(args.file)
    if not 0 <= args.row < len(rows):
        raise RowError(f"row {args.row} is out of range; {args.file} has rows 0..{len(rows) - 1}")
    row = rows.iloc[args.row]
    parts = build_trial(TrialSpec.from_dict(json.loads(row["config"])), controller=args.controller)
    result, frames, condition = replay.replay(row, parts.task, parts.protocol, parts.controller)
    who = args.controller or row["model"]
    print(
        f"{row['task']} {who} seed {row['seed']} case {row['case_seed']} under {condition.name}: "
        f"success {result.success} (recorded {bool(row['success'])}), final distance {result.final_distance:.3f} "
        f"(recorded {row['final_distance']:.3f})"
    )
    name = replay.strip_name(row["trial_id"] or row["task"], args.row, args.controller)
    title = f"{row['task']} · {who} · {condition.name} · success {result.success}"
    print(f"image strip: {replay.save_strip(frames, Path(args.out) / name, title)}")
    return 0


FAILURE_COLUMNS = (
    "trial_id", "task", "model", "seed", "config", "case_seed", "episode", "start_step", "start", "goal",
    "history_states", "history_actions", "recorded_actions", "condition", "condition_params", "success",
    "final_distance",
)  # fmt: skip


def _replay_failures(args: argparse.Namespace) -> int:
    """Replay the ``--top`` hardest rows of every RESULTS/failures/*.parquet; index the strips in replays.parquet."""
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    root = Path(args.root)
    folder = root / results.FAILURES_DIR
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no failures under {folder}: run `python -m harness stress search SWEEP` first")
    replayed: list[results.ReplayRow] = []
    for path in files:
        failures, spec = _read_failures(path)
        if spec is None:
            print(f"{path.stem}: the search found no failure to replay")
            continue
        parts = build_trial(spec)
        rows = replay.replay_top(failures, args.top, parts.task, parts.protocol, parts.controller, root,
                                 spec.role, spec.variant)  # fmt: skip
        for row in rows:
            again = "" if row.success == row.recorded_success else f" (recorded success {row.recorded_success})"
            print(
                f"{row.trial_id} row {row.failure_row}: {row.condition}, success {row.success}{again}, "
                f"final distance {row.final_distance:.3f} -> {root / row.strip}"
            )
        replayed += rows
    table = results.to_table(replayed, results.ReplayRow)
    print(f"{len(replayed)} strips indexed in {results.write_atomic(table, str(root), results.REPLAYS_FILE)}")
    return 0


def _read_failures(path: Path) -> tuple[pd.DataFrame, TrialSpec | None]:
    """A failures file's rows and the trial spec they carry (None when it holds no row); RowError naming the file."""
    try:
        failures = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise RowError(f"cannot read failures file {path}: {str(error).splitlines()[0]}") from None
    missing = [column for column in FAILURE_COLUMNS if column not in failures.columns]
    if missing:
        raise RowError(f"{path} is not a failures file of `harness stress search`: it lacks {', '.join(missing)}")
    if failures.empty:
        return failures, None
    try:
        return failures, TrialSpec.from_dict(json.loads(failures.iloc[0]["config"]))
    except (ConfigError, ValueError, KeyError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RowError(f"{path}: its config is not a trial spec ({reason})") from None


# --- datasets: the cache's catalog (tasks/catalog.py) ---------------------------------------------


def _check_model(args: argparse.Namespace) -> int:
    from models.contract import check_contract

    checks = check_contract(args.name, args.size, args.image_size, args.action_dim, args.history)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.clause}" + (f"  ({check.detail})" if check.detail else ""))
    failed = [check for check in checks if not check.ok]
    print(f"{args.name}: {'keeps the contract' if not failed else f'{len(failed)} clause(s) broken'}")
    return 1 if failed else 0


def _datasets(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            print(catalog.catalog(args.cache_dir).describe())
            return 0
        summary = catalog.find(args.key, args.cache_dir)
        if args.action == "inspect":
            report = catalog.inspect(summary)
            print(report.describe())
            return 1 if report.damaged else 0  # a damaged shard fails the check, as a checksum tool's exit says
        path = catalog.preview(summary, args.out, episode=args.episode, frames=args.frames)
    except catalog.CatalogError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"episode {args.episode} of {summary.key} ({summary.task_name}, {summary.recipe}) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
