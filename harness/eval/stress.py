"""Rare-state failure mining: where controllers fail, and a search that finds failures on purpose.

Two views of the same question, "which cases break this controller?":

- Rarity (:func:`rarity_table`): how far each evaluation case's start and goal lie from
  the training data (mean distance to the k = 5 nearest training states, in true-state
  space standardised per dimension), and success by rarity bucket (quantiles shared by
  every model and condition of a task, so the buckets are paired).
- Adversarial search (:func:`adversarial_search`): Optuna, through Ray Tune's
  OptunaSearch, proposes a start (an episode and step of the held-out data, goal
  ``goal_offset`` steps later as in the protocol) and perturbation magnitudes, and
  minimises the controller's success. Every evaluated episode becomes a replayable row
  (task, seed, start, goal, history, condition, config) in Parquet;
  ``python -m harness.eval.replay FILE ROW`` re-runs one and draws it.

    python -m harness.eval.stress rarity results/robustness
    python -m harness.eval.stress search sweeps/stress.yaml --budget 32
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from scipy.spatial import cKDTree

from harness.eval.cases import Case, make_cases
from harness.eval.evaluation import Controller, ModelController, OracleController, RandomController, run_episodes
from harness.eval.planners import make_optimizer
from harness.eval.protocol import Protocol
from harness.report import results
from harness.report.stats import wilson_interval
from harness.trial.training import TrainConfig, load_or_train
from models.world_model import WorldModel
from tasks.base import Task, make_task
from tasks.conditions import AXES, Condition
from tasks.data import Episodes, WindowDataset, collect

log = logging.getLogger(__name__)

HELDOUT_SEED_OFFSET = 1_000_003  # as harness.trial.trial: held-out episodes come from a different collection seed
RARITY_K = 5  # neighbours in the k-NN rarity
# The perturbations the search may combine, with their bounds (the threat model). Sticky actions
# ("sticky_prob": (0.0, 0.25)) join once the evaluator executes through Condition.channel.
DEFAULT_AXES: dict[str, tuple[float, float]] = {"action_noise": (0.0, 0.4), "camera_shift": (0.0, 4.0)}
PROGRESS_WEIGHT = 0.1  # the search's score: success rate + this × progress towards the goal


# --- one trial's parts, as harness.trial.trial builds them ---------------------------------------------


@dataclass
class TrialSetup:
    """Everything a trial evaluates with: task, protocol, data, held-out source, cases and controller."""

    config: dict[str, Any]
    task: Task
    protocol: Protocol
    data: Episodes
    source: Episodes
    cases: list[Case]
    controller: Controller
    model: WorldModel | None


def prepare_trial(config: dict[str, Any], controller: str | None = None) -> TrialSetup:
    """A trial config's task, data, cases and controller (the model loaded from the checkpoint cache,
    or trained once). ``controller`` ("random", "oracle") replaces the config's model."""
    device = torch.device(config.get("device", "cpu"))
    torch.manual_seed(config["seed"])
    task = make_task(config["task"]["name"], image_size=config["task"]["image_size"], **config["task"]["options"])
    protocol = Protocol(**config["protocol"]).resolved(task.default_history, task.default_frameskip)
    data_cfg = config["data"]

    def dataset(episodes: int, seed: int) -> Episodes:
        return collect(task, data_cfg["policy"], episodes, data_cfg["steps"], seed, data_cfg["noise"],
                       workers=data_cfg.get("workers", 1), progress=False)  # fmt: skip

    data = dataset(data_cfg["episodes"], data_cfg["seed"])
    source = data
    if protocol.split == "heldout":
        source = dataset(data_cfg["heldout_episodes"], data_cfg["seed"] + HELDOUT_SEED_OFFSET)
    cases, _ = make_cases(task, source, protocol)
    planner = config["planner"]
    optimizer = make_optimizer(
        planner["name"], planner["samples"], planner["iterations"], planner["elites"], planner["init_std"],
        planner["temperature"],
    )  # fmt: skip
    name = controller or config["model"]["name"]
    model = None
    if name == "random":
        chosen: Controller = RandomController(planner["horizon"], protocol.frameskip * task.action_dim, config["seed"])
    elif name == "oracle":
        chosen = OracleController(task, optimizer, planner["horizon"], protocol.frameskip, config["seed"])
    else:
        train = dict(config["train"])
        windows = WindowDataset(data, num_frames=train.pop("num_frames"), frameskip=protocol.frameskip)
        overrides = {"history": protocol.history, **config["model"]["overrides"]}
        model, _ = load_or_train(
            name, config["model"]["size"], task.image_size, protocol.frameskip * task.action_dim, overrides,
            windows, data.key, TrainConfig(**train, seed=config["seed"]), device, world_size=config.get("devices", 1),
        )  # fmt: skip
        chosen = ModelController(
            name, model, optimizer, planner["horizon"], planner["receding"], config["seed"], device, planner["chunk"]
        )
    return TrialSetup(config, task, protocol, data, source, cases, chosen, model)


def case_at(
    states: np.ndarray,
    actions: np.ndarray,
    protocol: Protocol,
    episode: int,
    start: int,
    case_seed: int,
    index: int = 0,
) -> Case:
    """The protocol's case starting at ``start`` of ``episode`` (states (E, L+1, S), actions (E, L, A))."""
    history, frameskip, offset = protocol.history, protocol.frameskip, protocol.goal_offset
    first = (history - 1) * frameskip
    if not first <= start <= actions.shape[1] - offset:
        raise ValueError(f"start step {start} must lie in [{first}, {actions.shape[1] - offset}] for this protocol")
    steps = range(start - first, start + 1, frameskip)
    blocks = [actions[episode, s : s + frameskip].reshape(-1) for s in steps][:-1]
    return Case(
        index=index,
        case_seed=case_seed,
        episode=episode,
        start_step=start,
        history_states=states[episode, list(steps)],
        history_actions=np.asarray(blocks, dtype=np.float32).reshape(history - 1, frameskip * actions.shape[-1]),
        goal=states[episode, start + offset],
        recorded_actions=actions[episode, start : start + offset],
        start_solved=False,
    )


def candidate_starts(task: Task, states: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Every (episode, start step) of the data the protocol could draw: (C, 2), in episode then step order.

    Starts that already meet their goal are left out when the protocol resamples them,
    so a search spends no budget on cases that do not count.
    """
    first = (protocol.history - 1) * protocol.frameskip
    last = states.shape[1] - 1 - protocol.goal_offset
    pairs = [(e, s) for e in range(len(states)) for s in range(first, last + 1)]
    if protocol.resample_solved:
        pairs = [(e, s) for e, s in pairs if not task.success(states[e, s], states[e, s + protocol.goal_offset])]
    if not pairs:
        raise ValueError(f"the data hold no unsolved start for protocol {protocol.name!r}; collect longer episodes")
    return np.asarray(pairs, dtype=np.int64)


# --- rarity -----------------------------------------------------------------------------------------


def knn_rarity(reference: np.ndarray, queries: np.ndarray, k: int = RARITY_K) -> np.ndarray:
    """Mean distance of each query (Q, S) to its k nearest reference states (M, S), per-dimension standardised."""
    scale = reference.std(axis=0) + 1e-8
    tree = cKDTree(reference / scale)
    distances, _ = tree.query(np.asarray(queries) / scale, k=k)
    return distances.reshape(len(queries), -1).mean(axis=1)


def rarity_table(root: str, k: int = RARITY_K, buckets: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(episode rows with start/goal rarity and bucket, success by task × model × condition × bucket).

    A case is as rare as its rarer end: rarity = max(start rarity, goal rarity). Bucket edges
    are quantiles of the task's distinct cases, so every model and condition shares them.
    """
    episodes = results.load(root, "episodes")
    trials = results.load(root).drop_duplicates("trial_id").set_index("trial_id")
    episodes = episodes[episodes["trial_id"].isin(trials.index)].copy()
    episodes["start_rarity"], episodes["goal_rarity"] = np.nan, np.nan
    for trial_ids in _trials_by_training_data(trials):
        config = json.loads(trials.loc[trial_ids[0], "config"])
        task = make_task(config["task"]["name"], image_size=config["task"]["image_size"], **config["task"]["options"])
        data_cfg = config["data"]
        data = collect(
            task, data_cfg["policy"], data_cfg["episodes"], data_cfg["steps"], data_cfg["seed"], data_cfg["noise"],
            workers=data_cfg.get("workers", 1), progress=False,
        )  # fmt: skip
        reference = data.states.reshape(-1, data.states.shape[-1])  # (E·(L+1), S)
        rows = episodes["trial_id"].isin(trial_ids)
        episodes.loc[rows, "start_rarity"] = knn_rarity(reference, np.stack(episodes.loc[rows, "start"]), k)
        episodes.loc[rows, "goal_rarity"] = knn_rarity(reference, np.stack(episodes.loc[rows, "goal"]), k)
    episodes["rarity"] = episodes[["start_rarity", "goal_rarity"]].max(axis=1)
    episodes["bucket"] = -1
    for _, group in episodes.groupby("task"):
        distinct = group.drop_duplicates(["protocol_hash", "case_seed"])["rarity"].to_numpy()
        edges = np.quantile(distinct, np.linspace(0, 1, buckets + 1))
        episodes.loc[group.index, "bucket"] = np.clip(
            np.searchsorted(edges, group["rarity"], side="right") - 1, 0, buckets - 1
        )
    summary = []
    for (task, model, condition, bucket), group in episodes.groupby(["task", "model", "condition", "bucket"]):
        interval = wilson_interval(int(group["success"].sum()), len(group))
        summary.append(
            {
                "task": task, "model": model, "condition": condition, "bucket": int(bucket),
                "rarity_low": group["rarity"].min(), "rarity_high": group["rarity"].max(), "episodes": len(group),
                "success_rate": group["success"].mean(), "success_ci_low": interval.low,
                "success_ci_high": interval.high,
            }
        )  # fmt: skip
    return episodes, pd.DataFrame(summary)


def _trials_by_training_data(trials: pd.DataFrame) -> list[list[str]]:
    """Trial ids grouped by the training data they share (task spec + data spec)."""
    groups: dict[str, list[str]] = {}
    for trial_id, config in trials["config"].items():
        if not isinstance(config, str):  # a failed trial without a config
            continue
        parsed = json.loads(config)
        groups.setdefault(json.dumps([parsed["task"], parsed["data"]], sort_keys=True), []).append(trial_id)
    return list(groups.values())


# --- adversarial search ------------------------------------------------------------------------------


@dataclass
class SearchInputs:
    """What a search trial needs, slim enough for Ray's object store (no pixels)."""

    task: Task
    protocol: Protocol
    controller: Controller
    states: np.ndarray  # (E, L+1, S) held-out states
    actions: np.ndarray  # (E, L, A)
    starts: np.ndarray  # (C, 2) the (episode, start step) pairs a proposal indexes
    receding: int  # action blocks executed between replanning calls
    repeats: int
    seed: int
    axes: tuple[str, ...]


def probe(params: dict[str, Any], inputs: SearchInputs) -> dict[str, Any]:
    """Run the proposed start under the proposed perturbation ``repeats`` times (fresh noise each); its outcome."""
    protocol, task = inputs.protocol, inputs.task
    episode, start = (int(v) for v in inputs.starts[int(params["start"])])
    condition = Condition(**{axis: float(params[axis]) for axis in inputs.axes})
    outcome: dict[str, Any] = {}
    successes, progress = [], []
    for repeat in range(inputs.repeats):
        case_seed = int(
            np.random.SeedSequence([protocol.case_seed, inputs.seed, episode, start, repeat]).generate_state(1)[0]
        )
        case = case_at(inputs.states, inputs.actions, protocol, episode, start, case_seed)
        # One episode per planning batch: its plans depend on its own seed only, so a row replays exactly.
        result = run_episodes(inputs.controller, task, [case], protocol, condition, inputs.receding, 1)[0]
        initial = task.distance(case.start, case.goal)
        successes.append(float(result.success))
        progress.append(float(np.clip(1 - result.final_distance / max(initial, 1e-9), 0.0, 1.0)))
        outcome |= {
            f"success_{repeat}": float(result.success),
            f"final_distance_{repeat}": result.final_distance,
            f"steps_{repeat}": result.steps,
            f"case_seed_{repeat}": case_seed,
        }
    outcome["success_rate"] = float(np.mean(successes))
    outcome["score"] = outcome["success_rate"] + PROGRESS_WEIGHT * float(np.mean(progress))
    return outcome


def _tune_probe(config: dict[str, Any], inputs: SearchInputs) -> None:
    from ray import tune

    tune.report(probe(config, inputs))


def adversarial_search(
    setup: TrialSetup,
    budget: int = 16,
    repeats: int = 2,
    axes: dict[str, tuple[float, float]] | None = None,
    seed: int = 0,
    storage_path: str | None = None,
    address: str | None = None,
) -> pd.DataFrame:
    """Optuna (via Ray Tune's OptunaSearch) over start and perturbation, minimising success.

    Returns one replayable row per evaluated episode (``budget`` × ``repeats``), hardest first.
    """
    import optuna
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    axes = dict(DEFAULT_AXES if axes is None else axes)
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ValueError(f"search axis {unknown[0]!r} is not a condition field; fields: {', '.join(AXES)}")
    protocol, source = setup.protocol, setup.source
    starts = candidate_starts(setup.task, source.states, protocol)
    space = {
        "start": tune.randint(0, len(starts)),  # neighbouring indices: neighbouring steps of one episode
        **{axis: tune.uniform(low, high) for axis, (low, high) in axes.items()},
    }
    receding = setup.config["planner"]["receding"]
    inputs = SearchInputs(
        setup.task, protocol, setup.controller, source.states, source.actions, starts, receding, repeats, seed,
        tuple(axes),
    )  # fmt: skip
    if not ray.is_initialized():
        # "local": without an address, start a private Ray rather than join another user's cluster on this host.
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    device = torch.device(setup.config.get("device", "cpu"))
    trainable = tune.with_resources(
        tune.with_parameters(_tune_probe, inputs=inputs), {"cpu": 1, "gpu": float(device.type == "cuda")}
    )
    # TPE after a few random proposals (Optuna's default waits for 10, most of a small budget).
    sampler = optuna.samplers.TPESampler(n_startup_trials=max(2, min(10, budget // 3)), seed=seed)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="score", mode="min", sampler=sampler),
            num_samples=budget,
            max_concurrent_trials=1,  # sequential: each proposal learns from every earlier one
            reuse_actors=True,  # one worker for the whole search: the controller is unpickled once
        ),
        run_config=tune.RunConfig(
            name=f"stress-{setup.config.get('trial_id', 'trial')}",
            storage_path=str(Path(storage_path or tempfile.mkdtemp(prefix="wmbench-stress-")).resolve()),
            verbose=0,
        ),
    )
    grid = tuner.fit()
    errors = [result.error for result in grid if result.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {budget} search trials failed; the first: {errors[0]}")
    frame = grid.get_dataframe()
    return _case_rows(setup, inputs, frame)


def _case_rows(setup: TrialSetup, inputs: SearchInputs, frame: pd.DataFrame) -> pd.DataFrame:
    """One replayable row per (search trial, repeat), from Tune's result frame."""
    config, protocol = setup.config, setup.protocol
    reference = setup.data.states.reshape(-1, setup.data.states.shape[-1])
    rows = []
    for search_trial, result in frame.reset_index(drop=True).iterrows():
        episode, start = (int(v) for v in inputs.starts[int(result["config/start"])])
        condition = Condition(**{axis: float(result[f"config/{axis}"]) for axis in inputs.axes})
        for repeat in range(inputs.repeats):
            case = case_at(inputs.states, inputs.actions, protocol, episode, start, int(result[f"case_seed_{repeat}"]))
            rows.append(
                {
                    "trial_id": config.get("trial_id", ""),
                    "task": config["task"]["name"],
                    "model": config["model"]["name"],
                    "seed": config["seed"],
                    "config": json.dumps(config, sort_keys=True),
                    "search_trial": search_trial,
                    "score": float(result["score"]),
                    "repeat": repeat,
                    "episode": episode,
                    "start_step": start,
                    "case_seed": case.case_seed,
                    "start": case.start.astype(float).tolist(),
                    "goal": case.goal.astype(float).tolist(),
                    "history_states": case.history_states.astype(float).tolist(),
                    "history_actions": case.history_actions.astype(float).tolist(),
                    "recorded_actions": case.recorded_actions.astype(float).tolist(),
                    "condition": condition.name,
                    "condition_params": json.dumps(condition.params(), sort_keys=True),
                    "success": bool(result[f"success_{repeat}"]),
                    "final_distance": float(result[f"final_distance_{repeat}"]),
                    "steps": int(result[f"steps_{repeat}"]),
                    "start_rarity": float(knn_rarity(reference, case.start[None])[0]),
                    "goal_rarity": float(knn_rarity(reference, case.goal[None])[0]),
                    "protocol": protocol.to_json(),
                }
            )
    return pd.DataFrame(rows).sort_values(["score", "final_distance"], ascending=[True, False], ignore_index=True)


def write_failures(rows: pd.DataFrame, root: str, trial_id: str) -> str:
    """The failed episodes among ``rows`` as ``<root>/failures/<trial_id>.parquet`` (atomically); its path."""
    failures = rows[~rows["success"]].reset_index(drop=True)
    return results.write_atomic(
        pa.Table.from_pandas(failures, preserve_index=False), root, f"failures/{trial_id}.parquet"
    )


def case_from_row(row: pd.Series) -> Case:
    """The :class:`Case` a failure row describes (it needs nothing but the row)."""
    return Case(
        index=0,
        case_seed=int(row["case_seed"]),
        episode=int(row["episode"]),
        start_step=int(row["start_step"]),
        history_states=np.asarray(list(row["history_states"]), dtype=np.float32),
        history_actions=np.asarray(list(row["history_actions"]), dtype=np.float32),
        goal=np.asarray(row["goal"], dtype=np.float32),
        recorded_actions=np.asarray(list(row["recorded_actions"]), dtype=np.float32),
        start_solved=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.eval.stress", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rarity = commands.add_parser("rarity", help="success by rarity bucket from a results folder")
    rarity.add_argument("root", help="a results folder, e.g. results/robustness")
    rarity.add_argument("--buckets", type=int, default=4)
    rarity.add_argument("--k", type=int, default=RARITY_K)
    search = commands.add_parser("search", help="adversarial search for failures of each trial of a sweep")
    search.add_argument("sweep", help="a sweep YAML, e.g. sweeps/stress.yaml")
    search.add_argument("overrides", nargs="*", help="key=value overrides of the sweep")
    search.add_argument("--budget", type=int, default=32, help="search trials per sweep trial")
    search.add_argument("--repeats", type=int, default=2, help="episodes (fresh noise) per search trial")
    search.add_argument("--axis", action="append", default=[], metavar="NAME=LOW:HIGH",
                        help=f"a perturbation bound (repeatable); default {DEFAULT_AXES}")  # fmt: skip
    search.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else local Ray)")
    search.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    if args.command == "rarity":
        _, summary = rarity_table(args.root, args.k, args.buckets)
        path = results.write_atomic(pa.Table.from_pandas(summary, preserve_index=False), args.root, "rarity.parquet")
        with pd.option_context("display.width", 160, "display.max_rows", 500):
            print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"written to {path}")
        return 0

    from harness.sweep.config import ConfigError, load_sweep
    from harness.sweep.runner import plan_sweep

    try:
        sweep = load_sweep(args.sweep, args.overrides)
        axes = dict(DEFAULT_AXES)
        for spec in args.axis:
            name, _, bounds = spec.partition("=")
            low, _, high = bounds.partition(":")
            axes[name] = (float(low), float(high))
    except (ConfigError, ValueError) as error:
        print(f"error: {error} (axes are NAME=LOW:HIGH)", file=sys.stderr)
        return 2
    plan = plan_sweep(sweep, device=args.device)
    for trial in plan.trials:
        setup = prepare_trial(trial)
        rows = adversarial_search(
            setup, args.budget, args.repeats, axes, seed=trial["seed"],
            storage_path=str(Path(plan.root.split("://")[-1], "ray")), address=args.address,
        )  # fmt: skip
        path = write_failures(rows, plan.root, trial["trial_id"])
        failed = int((~rows["success"]).sum())
        print(f"{trial['trial_id']}: {failed} of {len(rows)} searched episodes failed -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
