"""Sweep files: bad keys and values are named before anything heavy starts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.eval.protocol import PRESETS, resolve_protocol
from harness.sweep.config import ConfigError, expand_trials, load_sweep
from harness.trial.spec import TrialSpec

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"


def test_every_shipped_sweep_validates():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        assert expand_trials(sweep), path


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.stepz=3", "train.stepz"),
        ("train.steps=many", "train.steps"),
        ("models.0.name=transformer9000", "transformer9000"),
        ("tasks.0.name=atari", "atari"),
        ("protocol.preset=lewm_v9", "lewm_v9"),
        ("planner.name=adam", "planner.name"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_sweep(QUICKSTART, [override])


def test_unknown_key_in_yaml_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text() + "\ntrain_steps: 10\n")
    with pytest.raises(ConfigError, match="train_steps"):
        load_sweep(bad)


def test_missing_sweep_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_sweep(tmp_path / "nope.yaml")


def test_cli_exits_2_with_the_key_and_starts_no_ray(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness.run", str(QUICKSTART), "train.stepz=3", f"results_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "train.stepz" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ray" not in result.stdout.lower()
    assert not (tmp_path / "ray").exists()


def test_grid_expands_and_trial_ids_are_stable():
    sweep = load_sweep(QUICKSTART, ["seeds=[0,1,2]", "+search.grid={model.sigreg_weight: [0.01, 0.1]}"])
    trials = expand_trials(sweep)
    assert len(trials) == 3 * 3 * 2  # models × seeds × grid
    lewm = [t for t in trials if t.model.name == "lewm"]
    assert {t.model.overrides["sigreg_weight"] for t in lewm} == {0.01, 0.1}
    ids = [t.trial_id for t in trials]
    assert len(set(ids)) == len(ids)
    assert ids == [t.trial_id for t in expand_trials(sweep)]


def test_variants_name_what_sets_trials_of_one_model_apart():
    sweep = load_sweep(REPO / "sweeps" / "planners.yaml", ["seeds=[0,1]"])
    variants = {(t.model.name, t.seed, t.variant) for t in expand_trials(sweep)}
    assert ("lewm", 1, "planner.name=mppi") in variants and ("random", 0, "planner.name=cem") in variants
    assert all(t.variant == "" for t in expand_trials(load_sweep(QUICKSTART, [])))
    many_tasks = load_sweep(REPO / "sweeps" / "robustness.yaml", [])  # tasks differ, but each has its own table
    assert all(t.variant == "" for t in expand_trials(many_tasks))
    lambdas = load_sweep(QUICKSTART, ["+search.grid={model.sigreg_weight: [0.0, 0.1]}"])
    assert {t.variant for t in expand_trials(lambdas) if t.model.name == "lewm"} == {
        "sigreg_weight=0.0",
        "sigreg_weight=0.1",
    }


def test_a_protocol_grid_names_each_protocol_apart(tmp_path):
    sweep = load_sweep(QUICKSTART, ["+search.grid={protocol.split: [heldout, train]}"])
    protocols = {(t.protocol.name, t.protocol.split) for t in expand_trials(sweep)}
    assert protocols == {("wmbench+custom+split=heldout", "heldout"), ("wmbench+custom+split=train", "train")}
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text() + "search:\n  grid:\n    protocol.splitt: [train]\n")
    with pytest.raises(ConfigError, match="protocol.splitt"):
        load_sweep(bad, [])


def test_protocol_presets_and_overrides():
    assert resolve_protocol("lewm_v1").goal_offset == 100
    assert resolve_protocol("lewm_v1").budget == 150
    custom = resolve_protocol({"preset": "lewm_v3", "episodes": 10})
    assert custom.split == "train" and custom.episodes == 10
    assert custom.hash() != PRESETS["lewm_v3"].hash()  # a different episode count is a different protocol
    assert PRESETS["lewm_v1"].hash() != PRESETS["lewm_v3"].hash()
    with pytest.raises(ValueError, match="goal_ofset"):
        resolve_protocol({"preset": "wmbench", "goal_ofset": 3})


def test_a_trial_spec_round_trips_through_json_and_keeps_its_id():
    for spec in expand_trials(load_sweep(REPO / "sweeps" / "planners.yaml", ["seeds=[0,1]"])):
        again = TrialSpec.from_dict(json.loads(spec.to_json()))
        assert again == spec and again.trial_id == spec.trial_id


def test_a_spec_names_its_role_and_every_condition_its_axis():
    trials = expand_trials(load_sweep(QUICKSTART, []))
    assert {t.model.name: t.role for t in trials} == {"lewm": "model", "random": "floor", "oracle": "ceiling"}
    axes = [(c.axis, c.magnitude) for c in trials[0].conditions]
    assert axes == [("clean", None), ("action_noise", 0.3), ("camera_shift", 4.0)]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.steps=0", "steps"),
        ("train.lr=-1", "lr"),
        ("planner.samples=0", "planner.samples"),
        ("planner.elites=500", "planner.elites"),
        ("planner.horizon=0", "planner.horizon"),
        ("protocol.episodes=-1", "protocol.episodes"),
        ("data.episodes=0", "data.episodes"),
        ("data.policy=greedy", "data.policy"),
        ("conditions=[{sticky_prob: 2}]", "sticky_prob"),
        ("models.0.size=huge", "models[0].size"),
        ("+tasks.0.data.episodez=3", "tasks.0.data.episodez"),
        ("tasks.0.image_size=7", "multiple of patch_size 8"),
        ("protocol.goal_offset=1000", "needs episodes of at least 1000 steps"),
        ("data.steps=5", "data.steps is 5"),
        ("train.num_frames=30", "train.num_frames 30"),
        ("resources.cpu=0", "resources.cpu"),
        ("resources.gpu=sometimes", "resources.gpu"),
        ("+tasks.0.data.episodes=0", "data.episodes"),
    ],
)
def test_impossible_values_are_named_before_anything_runs(override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        expand_trials(load_sweep(QUICKSTART, [override]))


def test_a_task_overrides_the_sweeps_data_for_its_own_trials_only():
    tasks = "tasks=[{name: two_room, data: {policy: random, episodes: 30}}, {name: pusht}]"
    trials = expand_trials(load_sweep(QUICKSTART, [tasks]))
    data = {t.task.name: t.data for t in trials}
    assert (data["two_room"].policy, data["two_room"].episodes) == ("random", 30)
    assert (data["pusht"].policy, data["pusht"].episodes) == ("expert", 200)  # the sweep's data block
    assert TrialSpec.from_dict(trials[0].to_dict()).trial_id == trials[0].trial_id


def test_malformed_yaml_is_one_line_naming_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [\n  - two_room\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 3, column 3: malformed YAML"):
        load_sweep(bad)


@pytest.mark.parametrize("name", ["../../../tmp/evil", "a/b", "/abs", ".."])
def test_a_sweep_name_cannot_point_the_results_elsewhere(name):
    with pytest.raises(ConfigError, match="plain folder name"):
        load_sweep(QUICKSTART, [f"name={name}"])
