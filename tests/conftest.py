"""Shared test setup: CPU-only, few threads, a private cache per test session."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402

if TYPE_CHECKING:
    import pandas as pd

# Two cores: one torch thread per pytest-xdist worker (two workers), both when the suite runs in one process.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

REPO = Path(__file__).resolve().parents[1]
TINY_SWEEP = REPO / "tests" / "data" / "tiny_sweep.yaml"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny models: on a shared 2-core machine, two OpenMP
    threads ran their small ops ~5× slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_two_room():
    """Two-Room at 16 px: the smallest frames the dataset tests collect."""
    from tasks.base import make_task

    return make_task("two_room", image_size=16)


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 3 episodes, so that a few episodes make several shards."""
    import tasks.data

    monkeypatch.setattr(tasks.data, "SHARD_EPISODES", 3)


@pytest.fixture(scope="module")
def two_room_cases(tmp_path_factory: pytest.TempPathFactory):
    """Two-Room at 32 px: (task, 10 expert episodes, the default protocol resolved, its 12 cases)."""
    from harness.eval.cases import make_cases
    from harness.eval.protocol import EvalProtocol
    from tasks.base import make_task
    from tasks.data import collect

    task = make_task("two_room", image_size=32)
    data = collect(task, "expert", episodes=10, seed=7, noise=0.3, cache_dir=tmp_path_factory.mktemp("c"), workers=1,
                   progress=False)  # fmt: skip
    protocol = EvalProtocol(episodes=12).resolved(task.default_history, task.default_frameskip)
    return task, data, protocol, make_cases(task, data, protocol)[0]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A dataset/checkpoint cache shared by the tests of one session."""
    path = tmp_path_factory.mktemp("wmbench-cache")
    os.environ["WMBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def harness_cli(cache_dir):
    """``python -m harness ARGS...`` run as a user runs it, from the repository, with the session's cache:
    returns the completed process (stdout, stderr, returncode)."""

    def run(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
        env = {**os.environ, "WMBENCH_CACHE": str(cache_dir)}
        return subprocess.run(
            [sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env,
            timeout=timeout,
        )  # fmt: skip

    return run


@pytest.fixture(scope="session")
def tiny_sweep(harness_cli):
    """Run tests/data/tiny_sweep.yaml (real Ray, seconds per trial) with key=value overrides and options,
    without the leaderboard at the end: returns the completed process."""

    def run(*args: object, timeout: int = 300) -> subprocess.CompletedProcess:
        return harness_cli("run", TINY_SWEEP, *args, "--no-leaderboard", timeout=timeout)

    return run


class FinishedSweep(NamedTuple):
    """A sweep run to the end: its results folder, its driver's finished process, and the cache it trained into."""

    results: Path
    driver: subprocess.CompletedProcess
    cache: Path


@pytest.fixture(scope="session")
def finished_tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    """tests/data/tiny_sweep.yaml run once to the end with W&B tracking (offline, the default), read by the sweep,
    progress and tracking tests; a test that changes the folder works on a copy. A run costs ~1 min on two busy
    cores, so the xdist workers of one suite share it: the first makes it under a file lock, as pytest-xdist's
    docs show, in the folder above their own temporary folders (that run's alone)."""
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    root = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.mktemp("finished")
    with FileLock(root / "finished-tiny-sweep.lock"):
        folder = root / "finished-tiny-sweep"
        record = folder / "driver.json"
        if not record.exists():
            env = {**os.environ, "WMBENCH_CACHE": str(folder / "cache")}
            env.pop("WANDB_MODE", None)  # a user's online mode stays out of the suite
            command = [sys.executable, "-m", "harness.run", str(TINY_SWEEP), f"results_dir={folder / 'results'}",
                       "tracking=wandb", "--no-leaderboard"]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            record.write_text(json.dumps({"args": done.args, "stdout": done.stdout, "stderr": done.stderr}))
        driver = json.loads(record.read_text())
    process = subprocess.CompletedProcess(driver["args"], 0, driver["stdout"], driver["stderr"])
    return FinishedSweep(folder / "results", process, folder / "cache")


SWEEP_CONDITIONS = 2  # tiny_sweep.yaml: clean and action_noise=0.2


def assert_complete_and_unique(root: Path, trials: int) -> "pd.DataFrame":
    """Every trial's rows, each (trial, condition) once, each trial's files verified, no temp file left, in the
    one results folder ``root`` (a local path; read through its ``file://`` URI); returns the condition rows."""
    from harness.report import results

    rows = results.load(root.as_uri())
    assert rows["trial_id"].nunique() == trials
    assert len(rows) == trials * SWEEP_CONDITIONS and not rows.duplicated(["trial_id", "condition"]).any()
    assert set(rows["status"]) == {"ok"}, rows["error"].dropna().tolist()
    assert len(list((root / "trials").glob("*.parquet"))) == trials
    episodes = results.load(root.as_uri(), results.EPISODES_DIR)
    assert not episodes.duplicated(["trial_id", "condition", "episode"]).any()
    assert set(episodes["trial_id"]) == set(rows["trial_id"])
    problems = {trial_id: results.verify_trial(root.as_uri(), trial_id) for trial_id in set(rows["trial_id"])}
    assert problems == dict.fromkeys(problems), problems  # each trial's files are whole and agree
    assert not list(root.rglob("*.tmp-*")), "no temp files are left behind"
    return rows


def wait_for(condition: Callable[[], object], timeout: float, what: str, process: subprocess.Popen) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if ``process`` (a sweep) ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.2)


class NaNPixels(torch.utils.data.Dataset):
    """Windows whose frames are NaN: a training loss on them cannot stay finite."""

    def __init__(self, windows: torch.utils.data.Dataset) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = dict(self.windows[index])
        window["pixels"] = torch.full_like(window["pixels"], float("nan"))
        return window
