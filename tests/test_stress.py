"""Rare-state failure mining: k-NN rarity, success and surprise by rarity bucket, the adversarial search and its
replay."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.eval.cases import case_at, make_cases
from harness.eval.evaluation import run_episodes
from harness.eval.replay import replay
from harness.eval.stress import SearchTarget, adversarial_search, knn_rarity, rarity_table, write_failures
from harness.eval.surprise import case_surprise, case_window, mean_surprise
from harness.report import leaderboard, results
from harness.sweep.cli import main as cli
from harness.sweep.config import expand_trials, load_sweep
from harness.trial.parts import TrialParts, build_trial
from harness.trial.spec import TrialSpec
from harness.trial.trial import run_trial
from tasks.conditions import Condition

TINY = Path(__file__).parent / "data" / "tiny_sweep.yaml"


def tiny_trial(tmp_path: Path, model: str) -> TrialSpec:
    overrides = [f"models=[{{name:{model}}}]", "protocol.episodes=12", f"results_dir={tmp_path}"]
    planner = ["planner.samples=16", "planner.iterations=2", "planner.elites=4"]  # an oracle that mostly succeeds
    return expand_trials(load_sweep(TINY, overrides + planner))[0]


def search_target(spec: TrialSpec, parts: TrialParts) -> SearchTarget:
    states = parts.train.states.reshape(-1, parts.train.states.shape[-1])
    return SearchTarget(
        spec.trial_id, spec.to_json(), spec.seed, parts.task, parts.protocol, parts.controller, parts.case_source,
        states,
    )  # fmt: skip


def test_knn_rarity_grows_with_distance_from_the_training_states():
    reference = np.random.default_rng(0).normal(size=(2000, 2)) * [10.0, 1.0]  # dimensions of different scales
    queries = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 6.0], [60.0, 0.0]])
    rarity = knn_rarity(reference, queries, k=5)
    assert rarity[0] < rarity[1] < rarity[3]
    assert rarity[2] > rarity[1]  # 6 stds out along the narrow axis is rarer than 1.5 along the wide one


def test_case_at_rebuilds_exactly_the_protocol_case(tmp_path, cache_dir):
    parts = build_trial(tiny_trial(tmp_path, "random"))
    source = parts.case_source
    for case in make_cases(parts.task, source, parts.protocol)[0][:3]:
        rebuilt = case_at(source.states, source.actions, parts.protocol, case.episode, case.start_step,
                          case.case_seed, case.index)  # fmt: skip
        for field in ("history_states", "history_actions", "goal", "recorded_actions"):
            assert np.array_equal(getattr(rebuilt, field), getattr(case, field)), field


def test_success_by_rarity_bucket_shares_bucket_edges_across_conditions(tmp_path, cache_dir):
    spec = tiny_trial(tmp_path, "random")
    condition_rows, episode_rows = run_trial(spec)
    results.write_trial(str(tmp_path), spec.trial_id, condition_rows, episode_rows)
    training = build_trial(spec).train.states
    episodes, summary = rarity_table(
        results.load(str(tmp_path), "episodes"), results.load(str(tmp_path)),
        lambda row: training.reshape(-1, training.shape[-1]), k=5, buckets=2,
    )  # fmt: skip
    assert len(episodes) == 2 * 12 and episodes["rarity"].gt(0).all()
    assert (episodes["rarity"] >= episodes["start_rarity"]).all()
    # A case lands in the same bucket under every condition: the comparison stays paired.
    assert episodes.groupby("case_seed")["bucket"].nunique().eq(1).all()
    rare = episodes.groupby("bucket")["rarity"].agg(["min", "max"])
    assert rare.loc[0, "max"] <= rare.loc[1, "min"]
    assert summary["episodes"].sum() == len(episodes)
    assert set(summary["condition"]) == {"clean", "action_noise=0.2"}
    assert summary["success_rate"].between(0, 1).all()

    # The command writes one typed row per trial × case, the buckets the leaderboard joins to the episodes.
    assert cli(["stress", "rarity", str(tmp_path), "--buckets", "2"]) == 0
    rows = results.read_rows(str(tmp_path), results.RARITY_FILE, results.RarityRow)
    assert len(rows) == 12 and set(rows["trial_id"]) == {spec.trial_id} and (rows["buckets"] == 2).all()
    clean = episodes[episodes["condition"] == "clean"].set_index("case_seed")
    assert rows.set_index("case_seed")["bucket"].to_dict() == clean["bucket"].to_dict()


def test_a_case_spliced_onto_another_episode_surprises_the_model_more_and_rarity_rows_carry_surprise(
    tmp_path, cache_dir, one_thread
):
    overrides = [
        "models=[{name:lewm},{name:random}]",
        "protocol.episodes=6",
        "train.steps=100",  # enough for the spliced frames to stand out by 2× or more (40 steps: not every case)
        "train.lr=0.002",
        f"results_dir={tmp_path}",
    ]
    model_spec, floor_spec = sorted(expand_trials(load_sweep(TINY, overrides)), key=lambda spec: spec.role != "model")
    assert (model_spec.role, floor_spec.role) == ("model", "floor")
    for spec in (model_spec, floor_spec):
        results.write_trial(str(tmp_path), spec.trial_id, *run_trial(spec))

    parts = build_trial(model_spec)  # the checkpoint the trial cached: no training again
    source, protocol, history, scaler = parts.case_source, parts.protocol, parts.model.history, parts.windows.scaler
    windows = [case_window(source, case, protocol, history, scaler) for case in parts.cases]
    frames, blocks = np.stack([f for f, _ in windows]), np.stack([b for _, b in windows])
    # The start's history frames, then one frame per action block to the goal.
    assert frames.shape[1] == history + protocol.goal_offset // protocol.frameskip
    spliced = frames.copy()  # every frame after the start taken from the next episode, at the same steps
    for index, case in enumerate(parts.cases):
        elsewhere = dataclasses.replace(case, episode=(case.episode + 1) % len(source))
        spliced[index, history:] = case_window(source, elsewhere, protocol, history, scaler)[0][history:]
    clean = mean_surprise(parts.model, frames, blocks)
    assert (mean_surprise(parts.model, spliced, blocks) > clean).all()
    assert case_surprise(parts.model, source, parts.cases, protocol, scaler) == pytest.approx(clean)

    # The rarity rows carry it: the model's surprise for each of its cases, none for the floor.
    assert cli(["stress", "rarity", str(tmp_path), "--buckets", "2"]) == 0
    rows = results.read_rows(str(tmp_path), results.RARITY_FILE, results.RarityRow).set_index("trial_id")
    scored = rows.loc[model_spec.trial_id].set_index("case_seed")["surprise"]
    assert scored.to_dict() == pytest.approx(
        {case.case_seed: value for case, value in zip(parts.cases, clean, strict=True)}
    )
    assert rows.loc[floor_spec.trial_id, "surprise"].isna().all() and len(rows.loc[floor_spec.trial_id]) == 6
    assert cli(["stress", "rarity", str(tmp_path), "--buckets", "2", "--no-surprise"]) == 0
    assert results.read_rows(str(tmp_path), results.RARITY_FILE, results.RarityRow)["surprise"].isna().all()


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_search_finds_a_case_worse_than_the_average_and_its_row_replays(tmp_path, cache_dir, local_ray):
    spec = tiny_trial(tmp_path, "oracle")
    parts = build_trial(spec)
    clean = run_episodes(parts.controller, parts.task, parts.cases, parts.protocol, Condition())
    average = np.mean([r.success for r in clean])
    assert average > 0.5  # the oracle mostly succeeds on the protocol's cases

    rows = adversarial_search(
        search_target(spec, parts), budget=12, repeats=2, axes={"action_noise": (0.0, 0.8)}, seed=0,
        storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    assert len(rows) == 12 * 2 and rows["score"].is_monotonic_increasing
    worst = rows.iloc[0]
    assert worst["score"] < average and not worst["success"]
    assert Condition(action_noise=json.loads(worst["condition_params"])["action_noise"]).name == worst["condition"]

    path = write_failures(rows, str(tmp_path), spec.trial_id)
    failures = pd.read_parquet(path)
    assert len(failures) == (~rows["success"]).sum() and not failures["success"].any()
    replayed = build_trial(TrialSpec.from_dict(json.loads(failures.iloc[0]["config"])))  # the row's own spec
    result, frames, _ = replay(failures.iloc[0], replayed.task, replayed.protocol, replayed.controller)
    assert result.success == failures.iloc[0]["success"]
    assert result.final_distance == pytest.approx(failures.iloc[0]["final_distance"], abs=1e-4)
    assert len(frames) == 2 + parts.protocol.budget // parts.protocol.frameskip  # start, each block, goal

    assert cli(["replay", path, "0", "--out", str(tmp_path / "strips")]) == 0
    (strip,) = (tmp_path / "strips").glob("*.png")
    assert strip.stat().st_size > 1000


def test_a_history_1_row_rebuilds_its_empty_action_history_with_its_width():
    """With history 1 a row stores no history blocks; the model's cost still needs them shaped (0, frameskip × A)."""
    from harness.eval.replay import case_from_row

    row = pd.Series(
        {"case_seed": 3, "episode": 1, "start_step": 0, "history_states": [[1.0, 2.0]], "history_actions": [],
         "goal": [3.0, 4.0], "recorded_actions": [[0.1, 0.2]] * 25}
    )  # fmt: skip
    case = case_from_row(row, frameskip=5)
    assert case.history_actions.shape == (0, 10) and case.recorded_actions.shape == (25, 2)


def test_replay_failures_draws_the_hardest_cases_of_every_trial_where_the_leaderboard_links_them(
    tmp_path, cache_dir, local_ray
):
    spec = tiny_trial(tmp_path, "oracle")
    results.write_trial(str(tmp_path), spec.trial_id, *run_trial(spec))
    parts = build_trial(spec)
    rows = adversarial_search(
        search_target(spec, parts), budget=4, repeats=2, axes={"action_noise": (0.8, 1.0)}, seed=0,
        storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    failures = pd.read_parquet(write_failures(rows, str(tmp_path), spec.trial_id))
    assert len(failures) >= 2  # this much noise defeats even the oracle

    assert cli(["replay-failures", str(tmp_path), "--top", "2"]) == 0
    replays = results.read_rows(str(tmp_path), results.REPLAYS_FILE, results.ReplayRow)
    assert list(replays["failure_row"]) == [0, 1] and set(replays["trial_id"]) == {spec.trial_id}
    assert list(replays["strip"]) == [f"strips/{spec.trial_id}_{row}.png" for row in (0, 1)]
    for replay_row, failure in zip(replays.itertuples(), failures.itertuples(), strict=False):
        assert (tmp_path / replay_row.strip).read_bytes().startswith(b"\x89PNG")
        assert replay_row.success == failure.success == replay_row.recorded_success  # it replays exactly
        assert replay_row.final_distance == pytest.approx(failure.final_distance, abs=1e-4)
        assert (replay_row.role, replay_row.condition) == ("ceiling", failure.condition)
    assert not list((tmp_path / "strips").glob(".*"))  # no temp file left behind

    markdown = leaderboard.render(str(tmp_path))["markdown"]
    links = re.findall(r"\]\(([^)]*strips/[^)]+)\)", markdown.read_text())
    assert links == [f"../strips/{spec.trial_id}_{row}.png" for row in (0, 1)]
    assert all((markdown.parent / link).is_file() for link in links)


def test_replay_failures_names_the_folder_or_file_it_cannot_use_in_one_line(tmp_path, capsys):
    assert cli(["replay-failures", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(tmp_path / "failures") in error and "stress search" in error

    (tmp_path / "failures").mkdir()
    damaged = tmp_path / "failures" / "two_room-lewm-s0-0123456789.parquet"
    damaged.write_bytes(b"PAR1 not really")
    assert cli(["replay-failures", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(damaged) in error and "cannot read" in error

    pd.DataFrame({"trial_id": ["x"], "success": [False]}).to_parquet(damaged)
    assert cli(["replay-failures", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(damaged) in error and "lacks task, model" in error

    assert cli(["replay-failures", str(tmp_path), "--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err
