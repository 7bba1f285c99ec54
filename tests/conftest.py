"""Shared test setup: CPU-only, few threads, a private cache per test session."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """A dataset/checkpoint cache shared by the tests of one session."""
    path = tmp_path_factory.mktemp("wmbench-cache")
    os.environ["WMBENCH_CACHE"] = str(path)
    return path
