"""`python -m harness datasets list | inspect | preview` on small real Two-Room collections in a private cache."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.sweep import cli
from tasks import catalog, data
from tasks.base import make_task
from tasks.scaler import ActionScaler


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, data.Episodes, data.Episodes]:
    """A cache holding two Two-Room 16 px datasets: expert episodes in two shards, and random ones."""
    root = tmp_path_factory.mktemp("cache")
    task = make_task("two_room", image_size=16)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "SHARD_EPISODES", 3)  # 5 episodes: two shards
        expert = data.collect(task, "expert", episodes=5, steps=30, seed=3, noise=0.3, cache_dir=root, workers=1,
                              progress=False)  # fmt: skip
        random = data.collect(task, "random", episodes=2, steps=20, seed=4, cache_dir=root, workers=1, progress=False)
    return root, expert, random


def datasets(capsys: pytest.CaptureFixture, root: Path, *args: object) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python -m harness datasets --cache-dir ROOT ARGS...``."""
    status = cli.main(["datasets", "--cache-dir", str(root), *map(str, args)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_list_names_every_cached_dataset_with_its_recipe_and_size(cache, capsys) -> None:
    root, expert, random = cache
    status, out, _ = datasets(capsys, root, "list")
    assert status == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "two_room v2  16 px  expert(noise=0.3) seed 3" in lines[expert.key] and "5 × 30" in lines[expert.key]
    assert "random(noise=0.1) seed 4" in lines[random.key] and "2 × 20" in lines[random.key]
    on_disk = sum(path.stat().st_size for path in (root / "datasets" / expert.key).iterdir() if path.is_file())
    assert f"{on_disk / 1024:.1f} KiB" in lines[expert.key]
    assert out.splitlines()[-1].startswith("2 dataset(s)")


def test_inspect_reports_shapes_policy_success_action_statistics_state_ranges_and_shards(cache, capsys) -> None:
    root, expert, _ = cache
    status, out, _ = datasets(capsys, root, "inspect", expert.key[:5])  # a prefix no other key shares
    assert status == 0, out
    assert "pixels (5, 31, 16, 16, 3) uint8 · actions (5, 30, 2) float32 · states (5, 31, 2) float32" in out
    assert f"{100 * expert.info['policy_success_rate']:.1f}% of episodes reached the policy's own goal" in out
    scaler = ActionScaler.fit(expert.actions)
    for dim, (mean, std) in enumerate(zip(scaler.mean, scaler.std, strict=True)):
        assert f"a[{dim}]  mean {mean:+.4f}  std {std:.4f}" in out
    low, high = expert.states.min(axis=(0, 1)), expert.states.max(axis=(0, 1))
    assert f"s[1] agent  min {low[1]:+.4f}  max {high[1]:+.4f}" in out
    assert "shards    2, all intact" in out and "shard_00001.h5  episodes 3-4" in out


def test_inspect_names_a_damaged_shard_and_leaves_its_episodes_out(cache, capsys, tmp_path) -> None:
    root, expert, _ = cache
    copy = tmp_path / "cache"
    shutil.copytree(root, copy)
    shard = copy / "datasets" / expert.key / "shard_00000.h5"
    shard.write_bytes(shard.read_bytes()[:-100])
    status, out, _ = datasets(capsys, copy, "inspect", expert.key)
    assert status == 1
    assert "shards    2, 1 damaged" in out and "shard_00000.h5  episodes 0-2" in out and "truncated" in out
    assert "actions (2, 30, 2)" in out  # the intact shard's episodes alone


def test_a_key_that_names_no_single_dataset_exits_2_naming_the_known_ones(cache, capsys) -> None:
    root, expert, random = cache
    status, out, err = datasets(capsys, root, "inspect", "no-such-key")
    assert status == 2 and not out and len(err.strip().splitlines()) == 1
    assert "'no-such-key'" in err and expert.key in err and random.key in err
    status, _, err = datasets(capsys, root, "preview", "", "--out", "x.png")  # "" starts every key
    assert status == 2 and "starts 2 dataset keys" in err


def test_preview_draws_an_episode_as_a_strip_of_frames_or_an_animation(cache, capsys, tmp_path) -> None:
    root, expert, _ = cache
    status, out, _ = datasets(capsys, root, "preview", expert.key, "--episode", 4, "--out", tmp_path / "strip.png")
    assert status == 0 and str(tmp_path / "strip.png") in out
    strip = np.asarray(Image.open(tmp_path / "strip.png").convert("RGB"))
    factor = catalog.PREVIEW_HEIGHT // 16  # 16 px frames drawn 6× larger
    assert strip.shape == (14 + 16 * factor, 8 * 16 * factor + 7 * 4, 3)  # 8 frames, 4 px apart, a caption above
    first = expert.pixels[4, 0].repeat(factor, axis=0).repeat(factor, axis=1)
    last = expert.pixels[4, 30].repeat(factor, axis=0).repeat(factor, axis=1)
    assert np.array_equal(strip[14:, : 16 * factor], first) and np.array_equal(strip[14:, -16 * factor :], last)
    status, _, _ = datasets(capsys, root, "preview", expert.key, "--out", tmp_path / "clip.gif")
    assert status == 0 and Image.open(tmp_path / "clip.gif").n_frames == 31
    status, _, err = datasets(capsys, root, "preview", expert.key, "--episode", 5, "--out", tmp_path / "x.png")
    assert status == 2 and "episodes 0..4" in err
    status, _, err = datasets(capsys, root, "preview", expert.key, "--out", tmp_path / "clip.mp4")
    if any(importlib.util.find_spec(backend) for backend in ("imageio_ffmpeg", "av")):
        assert status == 0 and (tmp_path / "clip.mp4").stat().st_size > 0
    else:  # not installed here: the command says what to install instead of failing deep inside imageio
        assert status == 2 and "pip install imageio imageio-ffmpeg" in err
