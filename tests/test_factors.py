"""Factors of variation as conditions: declared by the task, drawn from the case seed, paired with clean.

Every registered task's declaration and rendering of its factors is checked in
test_task_contract.py; here, on Two-Room (NumPy, fast), what a factor condition means.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.trial.trial as trial
from harness.eval.controllers import Controller, Observation
from harness.eval.evaluation import run_episodes
from harness.eval.planners import PlannerConfig
from harness.sweep.config import expand_trials, load_sweep
from harness.trial.spec import BOOKKEEPING, LATER_FIELDS
from tasks.base import task_class
from tasks.conditions import Condition
from tasks.factors import FACTORS, Factor, draw_factors, factor_rng

TINY = Path(__file__).parent / "data" / "tiny_sweep.yaml"
# The fields a condition had when trial ids were first written (before the factors of variation).
FIRST_CONDITION_FIELDS = (
    "action_noise", "camera_shift", "sticky_prob", "camera_rotate", "camera_zoom", "brightness", "hue"
)  # fmt: skip


class GoalRecorder(Controller):
    """Holds still and keeps the goal images it is shown."""

    name = "goal-recorder"
    planner = PlannerConfig(horizon=1, receding=1)

    def __init__(self, block_width: int) -> None:
        self.block_width, self.goals = block_width, []

    def begin(self, cases, goal_pixels: np.ndarray) -> None:
        self.goals.append(goal_pixels.copy())

    def plan(self, observation: Observation) -> torch.Tensor:
        return torch.zeros(len(observation.pixels), 1, self.block_width)


def seen_goals(task, cases, protocol, condition: Condition) -> np.ndarray:
    """The goal images (K, H, W, 3) a controller is shown for ``cases`` under ``condition``."""
    recorder = GoalRecorder(protocol.frameskip * task.action_dim)
    run_episodes(recorder, task, cases, protocol, condition, batch_size=len(cases))
    return recorder.goals[0]


def agent_pixel(task, goal: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel under the agent's centre at ``goal``: fully covered by the disc."""
    col, row = (np.asarray(goal) / task.geometry.world_size * task.image_size).astype(int)
    return int(row), int(col)


def test_a_strength_moves_the_value_from_nominal_towards_one_draw_per_case():
    factor = Factor.colour("a disc", (0.8, 0.2, 0.1))
    draw = factor.value(1.0, factor_rng(7, "agent_colour"))  # strength 1: the case's draw itself
    assert np.all((draw >= 0) & (draw <= 1))
    for strength in (0.0, 0.25, 0.5):
        value = draw_factors({"agent_colour": factor}, {"agent_colour": strength}, case_seed=7)["agent_colour"]
        np.testing.assert_allclose(value, np.array(factor.nominal) + strength * (draw - factor.nominal))
    other_case = factor.value(1.0, factor_rng(8, "agent_colour"))
    other_factor = factor.value(1.0, factor_rng(7, "background_colour"))
    assert not np.allclose(draw, other_case) and not np.allclose(draw, other_factor)
    with pytest.raises(ValueError, match="nominal value"):
        Factor.scale("a size", 1.2, 1.5)


def test_a_factor_is_a_condition_axis_with_its_strength_as_magnitude():
    condition = Condition(object_colour=0.5)
    assert (condition.name, condition.axis, condition.magnitude) == ("object_colour=0.5", "object_colour", 0.5)
    assert condition.factors == {"object_colour": 0.5} and not condition.moves_camera
    assert Condition(object_colour=0.5, lighting=1.0).axis == "combined"
    assert Condition().factors == {} and set(FACTORS) <= set(Condition().params())
    for strength in (-0.1, 1.5):
        with pytest.raises(ValueError, match="object_colour must be a strength in"):
            Condition(object_colour=strength)


def test_a_factor_condition_shows_each_case_its_own_draw_the_same_for_every_run(two_room_cases):
    task, _, protocol, cases = two_room_cases
    cases = cases[:4]
    clean = seen_goals(task, cases, protocol, Condition())
    assert np.array_equal(clean, task.render(np.stack([case.goal for case in cases])))  # clean renders as ever
    half, full = (seen_goals(task, cases, protocol, Condition(agent_colour=s)) for s in (0.5, 1.0))
    assert np.array_equal(full, seen_goals(task, cases, protocol, Condition(agent_colour=1.0)))  # another run: paired
    nominal = np.array(task.factors["agent_colour"].nominal) * 255
    colours = []
    for k, case in enumerate(cases):
        row, col = agent_pixel(task, case.goal)
        expected = 255 * draw_factors(task.factors, {"agent_colour": 1.0}, case.case_seed)["agent_colour"]
        np.testing.assert_allclose(full[k, row, col], expected, atol=1)  # the case's own draw, from its seed
        np.testing.assert_allclose(half[k, row, col], (nominal + expected) / 2, atol=1)  # half-way along one line
        np.testing.assert_allclose(clean[k, row, col], nominal, atol=1)
        # only the agent changed: the floor and the wall away from it are the clean frame's
        away = np.ones(clean.shape[1:3], dtype=bool)
        away[max(row - 4, 0) : row + 5, max(col - 4, 0) : col + 5] = False
        assert np.array_equal(full[k][away], clean[k][away])
        colours.append(tuple(full[k, row, col]))
    assert len(set(colours)) == len(cases)  # each case its own colour


def test_a_factor_the_task_does_not_declare_stops_the_trial_before_anything_is_built(tmp_path, monkeypatch):
    spec = expand_trials(load_sweep(TINY, [f"results_dir={tmp_path}"]))[0]
    spec = spec.with_condition(Condition(lighting=0.5))  # Two-Room has no lights

    def no_build(*args, **kwargs):
        raise AssertionError("the trial built its parts before refusing the condition")

    monkeypatch.setattr(trial, "build_trial", no_build)
    known = ", ".join(task_class(spec.task.name).factors)
    with pytest.raises(ValueError, match=rf"'lighting=0.5' varies lighting, which task 'two_room'.*: {known}$"):
        trial.run_trial(spec)


def test_rows_record_the_factor_strengths_and_which_kind_of_camera_change_a_condition_was(tmp_path):
    (spec,) = [s for s in expand_trials(load_sweep(TINY, [f"results_dir={tmp_path}"])) if s.model.name == "random"]
    conditions = (Condition(), Condition(camera_shift=2.0), Condition(agent_colour=0.5))
    rows, _ = trial.run_trial(dataclasses.replace(spec, conditions=conditions))
    by_condition = {row.condition: row for row in rows}
    assert by_condition["camera_shift=2"].camera_kind == "pixel"  # Two-Room warps its frames
    assert by_condition["clean"].camera_kind is None and by_condition["agent_colour=0.5"].camera_kind is None
    colour = by_condition["agent_colour=0.5"]
    assert (colour.axis, colour.magnitude, colour.agent_colour) == ("agent_colour", 0.5, 0.5)
    assert by_condition["clean"].agent_colour == 0.0  # where the factor's curve starts


def test_trial_ids_of_sweeps_that_vary_no_factor_are_the_ids_written_before_factors_existed(tmp_path):
    """Resume finds a sweep's finished trials by id: the factor fields, added later, stay out of it while 0."""
    spec = expand_trials(load_sweep(TINY, [f"results_dir={tmp_path}"]))[0]
    identity = {k: v for k, v in spec.to_dict().items() if k not in BOOKKEEPING}
    for (section, name), unchanged in LATER_FIELDS.items():
        if identity[section].get(name) == unchanged:
            del identity[section][name]
    identity["conditions"] = [{k: c[k] for k in FIRST_CONDITION_FIELDS} for c in identity["conditions"]]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    assert spec.trial_id.endswith(f"-{digest}")
    varied = spec.with_condition(Condition(object_colour=0.5))
    assert varied.trial_id != spec.with_condition(Condition()).trial_id  # a factor that is varied is in the id
