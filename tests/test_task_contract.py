"""Every registered task honours the Task contract; a task added to TASKS is tested here without editing this file.

Sizes come from the task classes themselves (action_dim, state_dim) and a small frame
(IMAGE_SIZE), since MuJoCo tasks render slowly on a CPU: one env per task is shared by
the module's tests, and each test takes a handful of steps.
"""

import json
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import tasks.data as data
from tasks.base import TASKS, StateLeakError, TaskEnv, make_task, missing_packages, planning_guard, task_class
from tasks.conditions import Condition
from tasks.data import collect, dataset_key
from tasks.events import EVENTS, ImpossibleEvents, impossible_events
from tasks.factors import FACTORS, Factor
from tasks.two_room import TwoRoom

IMAGE_SIZE = 16  # px: small, so Cube's and Reacher's frames render fast
STEPS = 3  # raw env steps a test takes


def installed_task(name: str):
    """The task's class, or a skip when the packages it requires are not installed here."""
    cls = task_class(name)
    missing = missing_packages(cls.requires)
    if missing:
        pytest.skip(f"task {name!r} needs {', '.join(missing)}")
    return cls


@pytest.fixture(scope="module", params=sorted(TASKS))
def task_and_env(request):
    installed_task(request.param)
    task = make_task(request.param, image_size=IMAGE_SIZE)
    env = task.make_env(seed=0)
    yield task, env
    env.close()


def random_actions(task, count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (count, task.action_dim)).astype(np.float32)


def start_states(task, env, count: int) -> np.ndarray:
    """States (count, S) of the task's random starts for seeds 0 .. count-1."""
    return np.stack([env.reset(seed=seed)[0]["state"] for seed in range(count)])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_class_declares_its_name_sizes_and_the_packages_it_requires(name):
    cls = task_class(name)
    assert cls.name == name
    assert isinstance(cls.action_dim, int) and isinstance(cls.state_dim, int) and isinstance(cls.version, str)
    assert isinstance(cls.requires, tuple) and all(isinstance(package, str) for package in cls.requires)
    # bare distribution names (no version pins): result rows look their versions up by these names
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", package) for package in cls.requires)
    assert issubclass(cls.events_class, ImpossibleEvents)
    assert "teleport" in cls.events_class.events and set(cls.events_class.events) <= set(EVENTS)
    if "colour_swap" in cls.events_class.events:  # a colour change recolours a declared factor, or edits pixels
        events = cls.events_class
        assert events.swap_factor in cls.factors or events.edit_pixels is not ImpossibleEvents.edit_pixels
    # declared by every task, with no default to inherit: its variation space and its kind of camera change
    assert cls.camera_kind in ("viewpoint", "pixel")
    assert isinstance(cls.factors, dict) and set(cls.factors) <= set(FACTORS)
    assert all(isinstance(factor, Factor) and factor.what for factor in cls.factors.values())
    # the probes report one figure per named quantity: non-empty groups of the task's own state dims
    assert cls.quantities and all(isinstance(quantity, str) for quantity in cls.quantities)
    for dims in cls.quantities.values():
        assert isinstance(dims, tuple) and dims and len(set(dims)) == len(dims)
        assert all(isinstance(dim, int) and 0 <= dim < cls.state_dim for dim in dims), dims


def test_task_classes_import_without_their_packages_and_name_them_when_built():
    """In a fresh interpreter where the packages are hidden, every class imports; building one says what to install."""
    requires = {name: list(task_class(name).requires) for name in TASKS}
    done = subprocess.run(
        [sys.executable, "-c", HIDDEN_PACKAGES_SCRIPT, json.dumps(requires)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(errors) == set(TASKS)
    for name, error in errors.items():
        if not requires[name]:
            assert error is None, error
            continue
        assert error is not None, f"task {name!r} was built with its packages hidden"
        assert len(error.splitlines()) == 1 and repr(name) in error
        assert f"pip install {' '.join(requires[name])}" in error


# Hides the distributions given as JSON in argv[1] (their modules and their metadata) before any task
# module is imported, then imports every task class and tries to build it: prints {name: error or null}.
HIDDEN_PACKAGES_SCRIPT = r"""
import json, re, sys
from importlib import abc, metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

requires = json.loads(sys.argv[1])
hidden = {norm(package) for packages in requires.values() for package in packages}
modules = {module for module, dists in metadata.packages_distributions().items() if {norm(d) for d in dists} & hidden}
version = metadata.version

def hidden_version(name):
    if norm(name) in hidden:
        raise metadata.PackageNotFoundError(name)
    return version(name)

class Hide(abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in modules:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)

metadata.version = hidden_version
sys.meta_path.insert(0, Hide())
from tasks.base import make_task, task_class

errors = {}
for name in requires:
    assert list(task_class(name).requires) == requires[name]
    try:
        make_task(name)
        errors[name] = None
    except ImportError as error:
        errors[name] = str(error)
print(json.dumps(errors))
"""


@pytest.mark.parametrize("name", sorted(TASKS))
def test_success_tests_are_named_published_first_and_do_not_key_the_data(name):
    """The authors' test is every task's default; the criterion is not in config(), so cache keys ignore it."""
    cls = installed_task(name)
    assert cls.success_tests[0] == "published" and len(set(cls.success_tests)) == len(cls.success_tests)
    default = make_task(name, image_size=IMAGE_SIZE)
    assert default.success_test == "published"
    recipe = {"policy": "expert", "episodes": 2, "steps": 3, "seed": 0, "noise": 0.1}
    for test in cls.success_tests:
        task = make_task(name, image_size=IMAGE_SIZE, success_test=test)
        assert task.success_test == test and "success_test" not in task.config()
        assert task.config() == default.config() and dataset_key(task, **recipe) == dataset_key(default, **recipe)
    with pytest.raises(ValueError, match=rf"'nearby'.*{name}.*known tests: {', '.join(cls.success_tests)}"):
        make_task(name, image_size=IMAGE_SIZE, success_test="nearby")


def test_a_missing_package_stops_the_task_in_one_sentence_naming_it():
    class Lacking(TwoRoom):
        requires = ("wmbench-no-such-package",)

    with pytest.raises(ImportError, match=r"two_room.*pip install wmbench-no-such-package"):
        Lacking()


def test_env_observations_and_actions_follow_the_task_contract(task_and_env):
    task, env = task_and_env
    assert isinstance(env, TaskEnv)
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"pixels", "state"}
    assert obs["pixels"].shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (task.state_dim,) and obs["state"].dtype == np.float32
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (task.action_dim,)
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.observation_space.contains(obs)
    for action in random_actions(task, STEPS):
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(reward, float) and isinstance(info, dict)
        assert not terminated and not truncated  # the caller sets the episode's length
    assert env.observation_space.contains(obs)
    assert np.array_equal(env.render(), obs["pixels"]) and np.array_equal(env.render_pixels(), obs["pixels"])
    assert obs["pixels"].std() > 5  # a real scene, not a blank frame
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(task.action_dim + 1, dtype=np.float32))


def test_make_env_with_a_seed_returns_an_env_already_reset_there(task_and_env):
    task, env = task_and_env
    fresh = task.make_env(seed=4)
    try:
        state, pixels = fresh.get_state(), fresh.render()
    finally:
        fresh.close()
    obs, _ = env.reset(seed=4)
    assert np.array_equal(state, obs["state"]) and np.array_equal(pixels, obs["pixels"])


def test_reset_is_reproducible_from_its_seed(task_and_env):
    _, env = task_and_env
    first, second, other = env.reset(seed=5)[0], env.reset(seed=5)[0], env.reset(seed=6)[0]
    assert np.array_equal(first["state"], second["state"]) and np.array_equal(first["pixels"], second["pixels"])
    assert not np.array_equal(first["state"], other["state"])


def test_set_state_places_the_world_exactly_and_renders_it_as_recorded(task_and_env):
    task, env = task_and_env
    obs, _ = env.reset(seed=1)
    for action in random_actions(task, STEPS, seed=1):
        obs, *_ = env.step(action)
    recorded = obs
    env.reset(seed=2)  # somewhere else entirely
    placed = env.set_state(recorded["state"])
    np.testing.assert_allclose(placed["state"], recorded["state"], atol=1e-4)
    np.testing.assert_allclose(env.get_state(), recorded["state"], atol=1e-4)
    assert np.array_equal(env.render(), placed["pixels"])
    difference = np.abs(placed["pixels"].astype(int) - recorded["pixels"].astype(int))
    assert difference.mean() < 0.5  # the same frame, up to float32 rounding of the state
    again, _ = env.reset(seed=3, options={"state": recorded["state"]})  # reset can place the world too
    np.testing.assert_allclose(again["state"], placed["state"], atol=1e-6)
    assert np.array_equal(again["pixels"], placed["pixels"])


def test_success_holds_at_the_goal_and_distance_is_a_distance(task_and_env):
    """For each of the task's success tests."""
    named, env = task_and_env
    states = start_states(named, env, 6)
    for test in named.success_tests:
        task = make_task(named.name, image_size=IMAGE_SIZE, success_test=test)
        for goal in states:
            assert task.success(goal, goal) and task.distance(goal, goal) == pytest.approx(0.0, abs=1e-6)
        distances = [task.distance(state, goal) for state in states for goal in states]
        assert min(distances) >= 0
        apart = [(s, g) for s in states for g in states if not task.success(s, g)]
        assert apart, f"six random starts all meet each other's {test} test"
        assert all(task.distance(s, g) > 0 for s, g in apart)


def test_policies_act_in_the_action_box(task_and_env):
    task, env = task_and_env
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for policy in (task.expert(rng, noise=0.1), task.random_policy(rng)):
        action = policy(obs)
        assert action.shape == (task.action_dim,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1)


def test_simulate_where_offered_agrees_with_the_env(task_and_env):
    task, env = task_and_env
    start = env.reset(seed=0)[0]["state"]
    action = random_actions(task, 1)
    predicted = task.simulate(start[None], action)
    if predicted is None:
        return  # no batched dynamics: the oracle is not offered for this task
    assert predicted.shape == (1, task.state_dim)
    np.testing.assert_allclose(predicted[0], env.step(action[0])[0]["state"], atol=1e-5)


def test_the_planning_guard_stops_every_read_of_true_state(task_and_env):
    task, env = task_and_env
    state = env.reset(seed=0)[0]["state"]
    action = np.zeros(task.action_dim, dtype=np.float32)
    reads = {
        "get_state": env.get_state,
        "set_state": lambda: env.set_state(state),
        "step": lambda: env.step(action),
        "reset": lambda: env.reset(seed=0),
        "success": lambda: task.success(state, state),
        "distance": lambda: task.distance(state, state),
        "simulate": lambda: task.simulate(state[None], action[None]),
    }
    for name, read in reads.items():
        with planning_guard(), pytest.raises(StateLeakError):
            read()
            pytest.fail(f"{name} ran inside planning_guard()")
    assert np.array_equal(env.get_state(), state)  # outside the guard all of it works


def test_the_camera_hook_moves_the_camera_exactly_when_the_task_says_it_has_one(task_and_env):
    task, env = task_and_env
    env.reset(seed=0)
    condition = Condition(camera_shift=1.0, brightness=0.1)
    rest = condition.place_camera(env)
    # a 3-D task renders the move itself; a 2-D task leaves it for the pixel warp
    assert rest == (Condition(brightness=0.1) if task.camera_kind == "viewpoint" else condition)
    assert env.set_viewpoint(0.0, 0.0, 1.0) is (task.camera_kind == "viewpoint")  # back to the default view


def test_every_declared_factor_changes_the_frame_and_its_nominal_value_restores_it_exactly(task_and_env):
    task, env = task_and_env
    state = env.reset(seed=0)[0]["state"]
    clean = env.set_state(state)["pixels"]
    values = env.factor_values()
    assert set(values) == set(task.factors)  # the env renders exactly the factors its task declares
    for name, factor in task.factors.items():
        np.testing.assert_allclose(values[name], factor.nominal, atol=1e-6)  # the declaration is the scene's own
        far = np.where(np.array(factor.nominal) > (np.array(factor.low) + factor.high) / 2, factor.low, factor.high)
        env.set_factors({name: far})
        varied = env.set_state(state)
        assert not np.array_equal(varied["pixels"], clean), f"{task.name}: {name} changed nothing"
        np.testing.assert_allclose(varied["state"], state, atol=1e-4)  # only the look changes, never the world
        env.set_factors({name: np.array(factor.nominal)})
        assert np.array_equal(env.set_state(state)["pixels"], clean), f"{task.name}: {name} did not restore"
    unknown = sorted(set(FACTORS) - set(task.factors)) or ["wobble"]
    with pytest.raises(ValueError, match=rf"{unknown[0]}.*its factors: {', '.join(task.factors) or 'none'}"):
        env.set_factors({unknown[0]: np.zeros(3)})
    if unknown[0] in FACTORS:  # a condition that varies it is refused, naming the factor and the task's own
        with pytest.raises(ValueError, match=rf"varies {unknown[0]}, which task '{task.name}' does not declare"):
            Condition(**{unknown[0]: 0.5}).check_task(task)


def test_every_event_of_a_task_changes_the_frames_from_its_step_on_and_never_before(task_and_env):
    task, env = task_and_env
    pool = start_states(task, env, 4)
    events = impossible_events(task, pool)
    assert isinstance(events, task.events_class) and "teleport" in events.events
    obs, _ = env.reset(seed=0)
    frames, states = [obs["pixels"]], [obs["state"]]
    actions = random_actions(task, 3, seed=2)
    for action in actions:
        obs, *_ = env.step(action)
        frames.append(obs["pixels"])
        states.append(obs["state"])
    frames, states = np.stack(frames), np.stack(states)
    for event in events.events:
        rng = np.random.default_rng(0)
        step = events.choose_step(event, states, 1, len(states) - 2, rng)
        if step is None:
            continue  # this short sequence cannot host it (e.g. it never comes near Two-Room's wall)
        twin = events.inject(event, frames, states, actions[:, None], step, rng)
        assert twin.shape == frames.shape and twin.dtype == np.uint8
        assert np.array_equal(twin[:step], frames[:step]), event  # the past is untouched
        for t in range(step, len(frames)):  # by more than re-placing the clean state renders (a level or two)
            change = np.abs(twin[t].astype(int) - frames[t]).max()
            assert change > 16, f"{task.name} {event}: frame {t} is the clean one (largest change {change})"


def test_collect_writes_the_cache_and_a_second_call_reads_it(task_and_env, tmp_path, monkeypatch):
    task, _ = task_and_env
    recipe = {"policy": "expert", "episodes": 2, "steps": 2, "seed": 3, "noise": 0.1, "progress": False}
    episodes = collect(task, cache_dir=tmp_path, workers=1, **recipe)
    size = IMAGE_SIZE
    assert episodes.pixels.shape == (2, 3, size, size, 3) and episodes.pixels.dtype == np.uint8
    assert episodes.actions.shape == (2, 2, task.action_dim) and np.abs(episodes.actions).max() <= 1
    assert episodes.states.shape == (2, 3, task.state_dim) and episodes.states.dtype == np.float32
    assert not np.array_equal(episodes.states[0, 0], episodes.states[1, 0])  # each episode its own start

    def no_work(*args, **kwargs):
        raise AssertionError("a cached dataset was collected again")

    monkeypatch.setattr(data, "collect_shard", no_work)
    again = collect(task, cache_dir=tmp_path, workers=1, **recipe)
    assert again.key == episodes.key and np.array_equal(again.pixels, episodes.pixels)
