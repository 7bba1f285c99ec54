"""Rare-state failure mining: where controllers fail, and a search that finds failures on purpose.

Two views of the same question, "which cases break this controller?":

- Rarity (:func:`rarity_table`): how far each evaluation case's start and goal lie from
  the training data (mean distance to the k = 5 nearest training states, in true-state
  space standardised per dimension), and success by rarity bucket (quantiles shared by
  every model and condition of a task, so the buckets are paired). :func:`rarity_rows`
  makes the typed rows (one per trial × case) the leaderboard's "Success by rarity" reads,
  each with the trial's model's surprise along the case's recorded frames where it was
  scored (harness/eval/surprise.py ``case_surprise``), so surprise can be read against rarity.
- Adversarial search (:func:`adversarial_search`): Optuna, through Ray Tune's
  OptunaSearch, proposes a start (an episode and step of the held-out data, goal
  ``goal_offset`` steps later as in the protocol) and perturbation magnitudes, and
  minimises the controller's success. Every evaluated episode becomes a replayable row
  (task, seed, start, goal, history, condition, config) in Parquet;
  ``python -m harness replay FILE ROW`` re-runs one and draws it, and
  ``python -m harness replay-failures RESULTS`` the hardest few of every trial, where the
  leaderboard links them (harness/eval/replay.py).

    python -m harness stress rarity results/stress          # RESULTS/rarity.parquet (--no-surprise: no models)
    python -m harness stress search sweeps/stress.yaml --budget 32
    python -m harness replay-failures results/stress --top 3

A library: those commands live in harness/sweep/cli.py, which builds the trial these
functions are given (harness/trial/parts.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.spatial import cKDTree

from harness.eval.cases import case_at
from harness.eval.controllers import Controller
from harness.eval.evaluation import run_episodes
from harness.eval.protocol import EvalProtocol
from harness.report import results
from harness.report.stats import wilson_interval
from tasks import ray_cluster
from tasks.base import Task
from tasks.conditions import AXES, Condition
from tasks.data import Episodes

RARITY_K = 5  # neighbours in the k-NN rarity
# The perturbations the search may combine, with their bounds (the threat model).
DEFAULT_AXES: dict[str, tuple[float, float]] = {"action_noise": (0.0, 0.4), "camera_shift": (0.0, 4.0)}
PROGRESS_WEIGHT = 0.1  # the search's score: success rate + this × progress towards the goal


@dataclass
class SearchTarget:
    """What a search attacks: one built trial's controller on its task and protocol."""

    trial_id: str
    config: str  # the trial spec as JSON: a failure row carries it, so it replays itself
    seed: int
    task: Task
    protocol: EvalProtocol  # resolved against the task
    controller: Controller
    source: Episodes  # the held-out episodes starts are drawn from
    reference_states: np.ndarray  # (M, S) training states, for each row's rarity
    device: str = "cpu"  # where the controller's model runs: the search asks Ray for a GPU when "cuda"


def candidate_starts(task: Task, states: np.ndarray, protocol: EvalProtocol) -> np.ndarray:
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


def rarity_table(
    episodes: pd.DataFrame,
    trials: pd.DataFrame,
    training_states: Callable[[pd.Series], np.ndarray],
    k: int = RARITY_K,
    buckets: int = 4,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(episode rows with start/goal rarity and bucket, success by task × model × condition × bucket).

    ``trials`` are condition rows (one per trial suffices); ``training_states(row)`` returns
    the (M, S) training states of that row's trial, asked once per training dataset. A case is
    as rare as its rarer end: rarity = max(start rarity, goal rarity). Bucket edges are
    quantiles of the task's distinct cases, so every model and condition shares them.
    """
    trials = trials[trials["status"] == "ok"].drop_duplicates("trial_id").set_index("trial_id")
    episodes = episodes[episodes["trial_id"].isin(trials.index)].copy()
    episodes["start_rarity"], episodes["goal_rarity"] = np.nan, np.nan
    for _, group in trials.groupby("dataset_key"):
        reference = training_states(group.iloc[0])
        rows = episodes["trial_id"].isin(group.index)
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


def rarity_rows(
    episodes: pd.DataFrame,
    k: int = RARITY_K,
    buckets: int = 4,
    surprise: Mapping[tuple[str, int], float] | None = None,
) -> list[results.RarityRow]:
    """One typed row per trial × case of :func:`rarity_table`'s episode rows (given the ``k`` and ``buckets`` it
    was called with): every condition of a trial ran the same cases, so a case's rarity and bucket are one.
    ``surprise`` maps (trial id, case seed) to the case's surprise; a case it does not name has none."""
    surprise = surprise or {}
    cases = episodes.drop_duplicates(["trial_id", "case_seed"]).sort_values(["task", "trial_id", "case_seed"])
    return [
        results.RarityRow(
            trial_id=row.trial_id,
            task=row.task,
            protocol_hash=row.protocol_hash,
            case_seed=int(row.case_seed),
            start_rarity=float(row.start_rarity),
            goal_rarity=float(row.goal_rarity),
            rarity=float(row.rarity),
            bucket=int(row.bucket),
            buckets=buckets,
            rarity_k=k,
            surprise=surprise.get((row.trial_id, int(row.case_seed))),
        )  # fmt: skip
        for row in cases.itertuples()
    ]


# --- adversarial search ------------------------------------------------------------------------------


@dataclass
class SearchInputs:
    """What a search trial needs, slim enough for Ray's object store (no pixels)."""

    task: Task
    protocol: EvalProtocol
    controller: Controller
    states: np.ndarray  # (E, L+1, S) held-out states
    actions: np.ndarray  # (E, L, A)
    starts: np.ndarray  # (C, 2) the (episode, start step) pairs a proposal indexes
    repeats: int
    seed: int
    axes: tuple[str, ...]


def evaluate_proposal(params: dict[str, Any], inputs: SearchInputs) -> dict[str, Any]:
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
        result = run_episodes(inputs.controller, task, [case], protocol, condition, batch_size=1)[0]
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


def _tune_proposal(config: dict[str, Any], inputs: SearchInputs) -> None:
    from ray import tune

    tune.report(evaluate_proposal(config, inputs))


def adversarial_search(
    target: SearchTarget,
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
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    axes = dict(DEFAULT_AXES if axes is None else axes)
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ValueError(f"search axis {unknown[0]!r} is not a condition field; fields: {', '.join(AXES)}")
    protocol, source = target.protocol, target.source
    starts = candidate_starts(target.task, source.states, protocol)
    space = {
        "start": tune.randint(0, len(starts)),  # neighbouring indices: neighbouring steps of one episode
        **{axis: tune.uniform(low, high) for axis, (low, high) in axes.items()},
    }
    inputs = SearchInputs(
        target.task, protocol, target.controller, source.states, source.actions, starts, repeats, seed, tuple(axes)
    )
    ray_cluster.connect(address)
    gpus = float(target.device.startswith("cuda"))
    trainable = tune.with_resources(tune.with_parameters(_tune_proposal, inputs=inputs), {"cpu": 1, "gpu": gpus})
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
            name=f"stress-{target.trial_id}",
            storage_path=str(Path(storage_path or tempfile.mkdtemp(prefix="wmbench-stress-")).resolve()),
            verbose=0,
        ),
    )
    grid = tuner.fit()
    errors = [result.error for result in grid if result.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} of {budget} search trials failed; the first: {errors[0]}")
    frame = grid.get_dataframe()
    return _case_rows(target, inputs, frame)


def _case_rows(target: SearchTarget, inputs: SearchInputs, frame: pd.DataFrame) -> pd.DataFrame:
    """One replayable row per (search trial, repeat), from Tune's result frame."""
    protocol, reference = target.protocol, target.reference_states
    rows = []
    for search_trial, result in frame.reset_index(drop=True).iterrows():
        episode, start = (int(v) for v in inputs.starts[int(result["config/start"])])
        condition = Condition(**{axis: float(result[f"config/{axis}"]) for axis in inputs.axes})
        for repeat in range(inputs.repeats):
            case = case_at(inputs.states, inputs.actions, protocol, episode, start, int(result[f"case_seed_{repeat}"]))
            rows.append(
                {
                    "trial_id": target.trial_id,
                    "task": target.task.name,
                    "model": target.controller.name,
                    "seed": target.seed,
                    "config": target.config,
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
        pa.Table.from_pandas(failures, preserve_index=False), root, f"{results.FAILURES_DIR}/{trial_id}.parquet"
    )
