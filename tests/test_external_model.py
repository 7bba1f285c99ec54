"""A model kept outside the repository runs through a sweep and lands on the leaderboard, with no edit
to wmbench: the worked example of docs/external_models.md, written into a throwaway package."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_SWEEP

from harness.report import leaderboard, results
from harness.sweep.config import ConfigError, load_sweep
from models.contract import check_contract

EXTERNAL = "mywm.world_model:build"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The docs' example module as ``mywm.world_model``, plus ``mywm.broken`` (a builder with no SIZES)."""
    root = tmp_path_factory.mktemp("outside")
    page = (REPO / "docs" / "external_models.md").read_text()
    (source,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    (root / "mywm").mkdir()
    (root / "mywm" / "__init__.py").write_text("")
    (root / "mywm" / "world_model.py").write_text(source)
    (root / "mywm" / "broken.py").write_text("def build(size, image_size, action_dim, *, history):\n    pass\n")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [module for module in sys.modules if module.startswith("mywm")]:
        del sys.modules[name]


def test_the_docs_example_keeps_the_contract_and_a_broken_module_is_reported(package):
    checks = check_contract(EXTERNAL, image_size=32, action_dim=10, history=1)
    assert all(check.ok for check in checks) and len(checks) >= 8, [c for c in checks if not c.ok]
    (broken,) = check_contract("mywm.broken:build")
    assert not broken.ok and "SIZES" in broken.detail
    env = {**os.environ, "PYTHONPATH": str(package)}
    shown = subprocess.run([sys.executable, "-m", "harness", "check-model", "mywm.broken:build"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 1 and "FAIL" in shown.stdout and "SIZES" in shown.stdout


def test_a_bad_external_name_or_size_is_refused_before_ray(package):
    with pytest.raises(ConfigError, match="no_such_module"):
        load_sweep(TINY_SWEEP, ["models=[{name: 'no_such_module.wm:build'}]"])
    with pytest.raises(ConfigError, match="huge"):
        load_sweep(TINY_SWEEP, [f"models=[{{name: '{EXTERNAL}', size: huge}}]"])


def test_an_outside_model_runs_through_a_sweep_onto_the_leaderboard(package, tmp_path, cache_dir):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(package), "WMBENCH_CACHE": str(cache_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(TINY_SWEEP), f"results_dir={out}", "--no-leaderboard",
         f"models=[{{name: '{EXTERNAL}', size: tiny}}, {{name: random}}]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = results.load(str(out))
    mine = rows[rows["model"] == EXTERNAL]
    assert len(mine) == 2 and set(mine["status"]) == {"ok"} and (mine["train_steps"] == 15).all()
    assert (mine["tokens_per_frame"] == 1).all() and mine["success_rate"].between(0, 1).all()
    board = leaderboard.render(str(out))
    assert EXTERNAL in Path(board["markdown"]).read_text()


def test_a_task_is_named_by_import_path_and_a_non_task_is_refused(package):
    from harness.sweep.config import expand_trials

    (trial, *_) = expand_trials(load_sweep(TINY_SWEEP, ["tasks.0.name=tasks.two_room:TwoRoom"]))
    assert trial.task.name == "tasks.two_room:TwoRoom" and ":" not in trial.trial_id
    with pytest.raises(ConfigError, match="not a Task subclass"):
        load_sweep(TINY_SWEEP, ["tasks.0.name=mywm.world_model:Config"])


CONTROLLER = '''
import torch

from harness.eval.controllers import Controller


class StandStill(Controller):
    """A floor of one's own: never moves."""

    name, role = "stand_still", "floor"

    def __init__(self, task, planner, frameskip, seed):
        self.planner, self.width = planner, frameskip * task.action_dim

    def begin(self, cases, goal_pixels):
        self.episodes = len(cases)

    def plan(self, observation):
        return torch.zeros(self.episodes, self.planner.horizon, self.width)
'''


def test_a_controller_from_outside_is_measured_as_the_floor_it_declares(package, tmp_path):
    from harness.sweep.config import expand_trials
    from harness.trial.trial import run_trial

    (package / "mywm" / "floors.py").write_text(CONTROLLER)
    (package / "mywm" / "unlabelled.py").write_text(CONTROLLER.replace('"floor"', '"model"'))
    (trial,) = expand_trials(load_sweep(TINY_SWEEP, ["models=[{name: 'mywm.floors:StandStill'}]", "conditions=[{}]"]))
    assert trial.role == "floor"
    rows, _ = run_trial(trial)
    assert [(row.role, row.status, row.episodes) for row in rows] == [("floor", "ok", 4)]
    with pytest.raises(ConfigError, match="role 'floor' or 'ceiling'"):
        load_sweep(TINY_SWEEP, ["models=[{name: 'mywm.unlabelled:StandStill'}]"])
