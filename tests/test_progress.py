"""Progress a person can read: each trial's phase, counters, elapsed time and time left, one line per trial.

The trial reports typed :class:`Progress` events through its ``report`` callable; a Ray Tune callback in
the driver renders them. The end-to-end tests run the tiny sweep through the command line, as a user does.
"""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.eval.controllers import RandomController
from harness.eval.evaluation import run_episodes
from harness.eval.planners import PlannerConfig
from harness.sweep.config import expand_trials, load_sweep
from harness.sweep.progress import TrialState, short_labels
from harness.trial.progress import Progress, ProgressThrottle
from tasks.conditions import Condition

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_sweep.yaml"
RAY_TABLE = "Trial status:"  # the first line of each of Ray's status tables


def test_a_progress_event_survives_flattening_into_tune_metrics():
    event = Progress("evaluating", fraction=0.25, condition="action_noise=0.2", condition_index=1, conditions=2,
                     cases_done=0, cases=4)  # fmt: skip
    metrics = event.metrics()
    assert all(key.startswith("progress/") for key in metrics) and "progress/loss" not in metrics  # unset: left out
    assert Progress.from_metrics({**metrics, "train/loss": 0.5, "training_iteration": 3}) == event
    assert Progress.from_metrics({"train/loss": 0.5}) is None
    with pytest.raises(ValueError, match="phase must be one of"):
        Progress("sleeping")


def test_the_throttle_passes_phase_changes_and_curves_but_not_a_flood_of_progress():
    throttle = ProgressThrottle(interval=60.0)
    evaluating = Progress("evaluating", fraction=0.1, condition="clean").metrics()
    assert throttle.admit(evaluating)
    assert not throttle.admit(Progress("evaluating", fraction=0.2, condition="clean").metrics())  # same phase, soon
    assert throttle.admit(Progress("evaluating", fraction=0.5, condition="shifted").metrics())  # a new condition
    assert throttle.admit({"train/loss": 0.4, **Progress("evaluating", condition="shifted").metrics()})  # a curve
    assert throttle.admit({"eval/clean/success_rate": 0.5})  # a summary, no progress in it


def test_labels_name_task_model_and_seed_and_stay_unambiguous():
    sweep = load_sweep(TINY, ["seeds=[0,1]", "search.grid={train.lr: [0.001, 0.01]}"])
    trials = expand_trials(sweep)
    labels = short_labels(trials)
    assert len(set(labels.values())) == len(trials)
    assert labels[trials[0].trial_id] == f"two_room/lewm/s0/{trials[0].variant}"  # the grid point is the variant
    # Two trials that differ in nothing a label shows are told apart by their ids' digests.
    twins = [dataclasses.replace(trial, variant="") for trial in trials if trial.model.name == "lewm"][:2]
    twin_labels = short_labels(twins)
    assert [twin_labels[t.trial_id] for t in twins] == [f"two_room/lewm/s0/{t.trial_id[-10:-4]}" for t in twins]
    assert short_labels(twins[:1]) == {twins[0].trial_id: "two_room/lewm/s0"}


def test_time_left_extrapolates_the_phase_and_adds_what_finished_trials_of_the_model_took():
    state = TrialState("two_room/lewm/s0", "lewm")
    state.update(Progress("collecting"), now=0.0)
    assert state.time_left(now=5.0, typical=None) == (None, True)  # nothing measured yet
    state.update(Progress("training", fraction=0.0, step=0, steps=400), now=10.0)
    state.update(Progress("training", fraction=0.25, step=100, steps=400, loss=0.5), now=30.0)
    left, lower = state.time_left(now=30.0, typical=None)
    assert left == pytest.approx(60.0) and lower  # 20 s per quarter, and evaluation still to come, unmeasured
    typical = {"collecting": 9.0, "training": 80.0, "diagnostics": 5.0, "evaluating": 40.0}
    assert state.time_left(now=30.0, typical=typical) == (pytest.approx(105.0), False)  # 60 + 5 + 40
    assert state.describe() == "training 100/400 loss 0.5"
    state.update(Progress("done"), now=200.0)
    assert state.time_left(now=250.0, typical=typical) == (0.0, False) and state.elapsed(now=250.0) == 200.0
    assert state.phase_seconds["collecting"] == 10.0 and state.phase_seconds["training"] == 20.0 + 170.0


def test_evaluation_reports_cases_done_per_condition_as_it_goes(two_room_cases):
    task, _, protocol, cases = two_room_cases
    seen = []
    controller = RandomController(task, PlannerConfig(batch_episodes=5), protocol.frameskip, seed=0)
    run_episodes(controller, task, cases, protocol, Condition(), on_progress=seen.append)
    fractions = [event.fraction for event in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) > 3  # every replanning step
    assert [e.cases_done for e in seen if e.batch_step == 0] == [12]  # the last event: all 12 cases done
    assert sorted({e.cases_done for e in seen}) == [0, 5, 10, 12]  # batches of 5, 5 and 2


def run_cli(*args: str, cache: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WMBENCH_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "harness.run", str(TINY), *args, "--no-leaderboard"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout,
    )  # fmt: skip


def phases_of(output: str, label: str) -> list[str]:
    """What one trial's progress lines say it does: ``HH:MM:SS  <label>  <phase>  <elapsed> elapsed[, <left> left]``."""
    line = re.compile(rf"\d\d:\d\d:\d\d  {re.escape(label)}\s+(.+?)\s{{2,}}\d+[smh]\S* elapsed(, [~≥?].* left)?")
    return [match[1] for match in map(line.fullmatch, output.splitlines()) if match]


def test_a_sweep_prints_each_trials_phases_and_no_ray_table(finished_tiny_sweep):
    result = finished_tiny_sweep.driver
    phases = phases_of(result.stdout, "two_room/lewm/s0")
    assert phases[:2] == ["collecting data", "training 0/15"], phases
    assert any(re.fullmatch(r"training 15/15 loss \S+", phase) for phase in phases)  # a phase's last figures
    assert "diagnostics (probe, surprise)" in phases
    for condition in ("clean (1/2)", "action_noise=0.2 (2/2)"):
        assert {f"evaluating {condition}: cases 0/4", f"evaluating {condition}: cases 4/4"} <= set(phases)
    assert re.fullmatch(r"done, success \d\.\d\d", phases[-1])
    random = phases_of(result.stdout, "two_room/random/s0")
    assert "evaluating clean (1/2): cases 4/4" in random and not any("training" in phase for phase in random)
    assert "progress: 2 trial(s) done, 0 failed" in result.stdout
    assert RAY_TABLE not in result.stdout + result.stderr  # Ray's table only with -v


@pytest.mark.slow  # a second sweep; the default-verbosity sweep above keeps the progress view in the suite
def test_verbose_adds_rays_table_and_the_summary_names_a_failed_trial(tmp_path, cache_dir):
    # A learning rate that makes LeWM's loss diverge: its trial fails, the random floor's does not.
    result = run_cli(f"results_dir={tmp_path / 'results'}", "train.lr=1e30", "conditions=[{}]", "-v", cache=cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert RAY_TABLE in result.stdout
    summary = result.stdout[result.stdout.index("progress: ") :].splitlines()
    assert summary[0].startswith("progress: 1 trial(s) done, 1 failed")
    assert re.fullmatch(r"  failed two_room/lewm/s0: TrainingDiverged: .+", summary[1]), summary[:3]
    assert any(re.search(r"two_room/lewm/s0\s+failed: TrainingDiverged", line) for line in result.stdout.splitlines())
