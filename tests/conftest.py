"""Shared test setup: CPU-only, few threads, a private cache per test session."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


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
