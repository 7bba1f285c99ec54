"""Rare-state failure mining: k-NN rarity, success by rarity bucket, the adversarial search and its replay."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.eval.cases import make_cases
from harness.eval.evaluation import run_episodes
from harness.eval.replay import main as replay_main
from harness.eval.replay import replay
from harness.eval.stress import adversarial_search, case_at, knn_rarity, prepare_trial, rarity_table, write_failures
from harness.report import results
from harness.sweep.config import expand_trials, load_sweep
from harness.trial.trial import run_trial, trial_configs
from tasks.conditions import Condition

TINY = Path(__file__).parent / "data" / "tiny_sweep.yaml"


def tiny_trial(tmp_path: Path, model: str) -> dict:
    overrides = [f"models=[{{name:{model}}}]", "protocol.episodes=12", f"results_dir={tmp_path}"]
    planner = ["planner.samples=32", "planner.iterations=2", "planner.elites=4"]  # an oracle that mostly succeeds
    sweep = load_sweep(TINY, overrides + planner)
    return trial_configs(expand_trials(sweep), str(tmp_path), "cpu")[0]


def test_knn_rarity_grows_with_distance_from_the_training_states():
    reference = np.random.default_rng(0).normal(size=(2000, 2)) * [10.0, 1.0]  # dimensions of different scales
    queries = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 6.0], [60.0, 0.0]])
    rarity = knn_rarity(reference, queries, k=5)
    assert rarity[0] < rarity[1] < rarity[3]
    assert rarity[2] > rarity[1]  # 6 stds out along the narrow axis is rarer than 1.5 along the wide one


def test_case_at_rebuilds_exactly_the_protocol_case(tmp_path, cache_dir):
    setup = prepare_trial(tiny_trial(tmp_path, "random"))
    for case in make_cases(setup.task, setup.source, setup.protocol)[0][:3]:
        rebuilt = case_at(setup.source.states, setup.source.actions, setup.protocol, case.episode, case.start_step,
                          case.case_seed, case.index)  # fmt: skip
        for field in ("history_states", "history_actions", "goal", "recorded_actions"):
            assert np.array_equal(getattr(rebuilt, field), getattr(case, field)), field


def test_success_by_rarity_bucket_shares_bucket_edges_across_conditions(tmp_path, cache_dir):
    config = tiny_trial(tmp_path, "random")
    condition_rows, episode_rows = run_trial(config)
    results.write_trial(str(tmp_path), config["trial_id"], condition_rows, episode_rows)
    episodes, summary = rarity_table(str(tmp_path), k=5, buckets=2)
    assert len(episodes) == 2 * 12 and episodes["rarity"].gt(0).all()
    assert (episodes["rarity"] >= episodes["start_rarity"]).all()
    # A case lands in the same bucket under every condition: the comparison stays paired.
    assert episodes.groupby("case_seed")["bucket"].nunique().eq(1).all()
    rare = episodes.groupby("bucket")["rarity"].agg(["min", "max"])
    assert rare.loc[0, "max"] <= rare.loc[1, "min"]
    assert summary["episodes"].sum() == len(episodes)
    assert set(summary["condition"]) == {"clean", "action_noise=0.2"}
    assert summary["success_rate"].between(0, 1).all()


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_search_finds_a_case_worse_than_the_average_and_its_row_replays(tmp_path, cache_dir, local_ray):
    setup = prepare_trial(tiny_trial(tmp_path, "oracle"))
    receding = setup.config["planner"]["receding"]
    clean = run_episodes(setup.controller, setup.task, setup.cases, setup.protocol, Condition(), receding)
    average = np.mean([r.success for r in clean])
    assert average > 0.5  # the oracle mostly succeeds on the protocol's cases

    rows = adversarial_search(
        setup, budget=12, repeats=2, axes={"action_noise": (0.0, 0.8)}, seed=0, storage_path=str(tmp_path / "ray")
    )
    assert len(rows) == 12 * 2 and rows["score"].is_monotonic_increasing
    worst = rows.iloc[0]
    assert worst["score"] < average and not worst["success"]
    assert Condition(action_noise=json.loads(worst["condition_params"])["action_noise"]).name == worst["condition"]

    path = write_failures(rows, str(tmp_path), setup.config["trial_id"])
    failures = pd.read_parquet(path)
    assert len(failures) == (~rows["success"]).sum() and not failures["success"].any()
    result, frames, _ = replay(failures.iloc[0])
    assert result.success == failures.iloc[0]["success"]
    assert result.final_distance == pytest.approx(failures.iloc[0]["final_distance"], abs=1e-4)
    assert len(frames) == 2 + setup.protocol.budget // setup.protocol.frameskip  # start, each block, goal

    assert replay_main([path, "0", "--out", str(tmp_path / "strips")]) == 0
    (strip,) = (tmp_path / "strips").glob("*.png")
    assert strip.stat().st_size > 1000
