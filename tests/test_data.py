"""Offline datasets: keyed cache, reads without work, rebuilds damaged shards, identical bytes however split."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks.data as data
from harness.trial.training import TrainConfig, infinite_batches
from tasks.base import make_task
from tasks.data import Episodes, WindowDataset, cache_root, collect, dataset_key, split_episodes
from tasks.store import Frames

# Small sizes: 16 px frames, short episodes, 3-episode shards so that a few episodes make several shards.
SMALL = {"episodes": 6, "steps": 24, "seed": 7, "noise": 0.1, "progress": False}


def shard_files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Each shard's (mtime_ns, bytes)."""
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.glob("shard_*.h5"))}


def dataset_folder(cache: Path, episodes: Episodes) -> Path:
    return cache / "datasets" / episodes.key


def assert_same_episodes(first: Episodes, second: Episodes) -> None:
    assert first.key == second.key
    for name in ("pixels", "actions", "states"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name


def test_cache_root_honours_wmbench_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("WMBENCH_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("WMBENCH_CACHE")
    assert cache_root() == Path(data.__file__).resolve().parents[1] / ".cache" / "wmbench"


def test_dataset_key_changes_with_everything_that_makes_the_data(small_two_room):
    base = {"policy": "expert", "episodes": 10, "steps": 20, "seed": 0, "noise": 0.1}
    key = dataset_key(small_two_room, **base)
    assert key == dataset_key(make_task("two_room", image_size=16), **base) and len(key) == 16
    changed = [
        dataset_key(small_two_room, **(base | {name: value}))
        for name, value in [("policy", "random"), ("episodes", 11), ("steps", 21), ("seed", 1), ("noise", 0.2)]
    ]
    changed.append(dataset_key(make_task("two_room", image_size=32), **base))
    changed.append(dataset_key(make_task("two_room", image_size=16, success_radius=3.0), **base))
    assert len({key, *changed}) == len(changed) + 1


def test_collect_returns_aligned_episodes_with_the_documented_shapes(small_two_room, tmp_path, small_shards):
    episodes = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert episodes.pixels.shape == (6, 25, 16, 16, 3) and episodes.pixels.dtype == np.uint8
    assert episodes.actions.shape == (6, 24, 2) and episodes.actions.dtype == np.float32
    assert episodes.states.shape == (6, 25, 2) and episodes.states.dtype == np.float32
    assert np.abs(episodes.actions).max() <= 1.0
    assert len(np.unique(episodes.states[:, 0], axis=0)) == 6  # every episode has its own start
    # actions[:, t] takes state t to state t+1, and the frame shows state t
    for t in range(24):
        assert np.array_equal(
            small_two_room.simulate(episodes.states[:, t], episodes.actions[:, t]), episodes.states[:, t + 1]
        )
    assert np.array_equal(small_two_room.render(episodes.states[:, 3]), episodes.pixels[:, 3])
    info = episodes.info
    assert (info["policy"], info["episodes"], info["steps"], info["seed"]) == ("expert", 6, 24, 7)
    assert info["task"] == small_two_room.config() and info["frames_per_s"] > 0
    assert 0.0 <= info["policy_success_rate"] <= 1.0
    manifest = json.loads((dataset_folder(tmp_path, episodes) / "manifest.json").read_text())
    assert [entry["episodes"] for entry in manifest["shards"]] == [[0, 3], [3, 6]]


def test_random_policy_reports_no_success_rate(small_two_room, tmp_path):
    episodes = collect(small_two_room, "random", cache_dir=tmp_path, workers=1, **SMALL)
    assert episodes.info["policy_success_rate"] is None
    assert not np.array_equal(
        episodes.actions, collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL).actions
    )


def test_second_collect_reads_the_cache_without_collecting(small_two_room, tmp_path, small_shards, monkeypatch):
    first = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    folder = dataset_folder(tmp_path, first)
    before = shard_files(folder) | {"manifest": (folder.joinpath("manifest.json").stat().st_mtime_ns, b"")}

    def no_collection(*args, **kwargs):
        raise AssertionError("a cached dataset was collected again")

    monkeypatch.setattr(data, "collect_shard", no_collection)
    second = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert_same_episodes(first, second)
    after = shard_files(folder) | {"manifest": (folder.joinpath("manifest.json").stat().st_mtime_ns, b"")}
    assert after == before
    assert second.info["policy_success_rate"] == first.info["policy_success_rate"]


def test_collect_uses_wmbench_cache_by_default(small_two_room, cache_dir):
    episodes = collect(small_two_room, "expert", workers=1, **SMALL)
    assert (Path(cache_dir) / "datasets" / episodes.key / "manifest.json").exists()


@pytest.mark.parametrize("damage", ["flip bytes", "truncate", "delete"])
def test_damaged_shard_is_rebuilt_with_a_warning_and_never_used(
    small_two_room, tmp_path, small_shards, monkeypatch, caplog, damage
):
    original = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    shard = dataset_folder(tmp_path, original) / "shard_00001.h5"
    intact = shard.read_bytes()
    content = bytearray(intact)
    if damage == "flip bytes":
        content[len(content) // 2 : len(content) // 2 + 16] = bytes(255 - b for b in content[len(content) // 2 :][:16])
        shard.write_bytes(bytes(content))
    elif damage == "truncate":
        shard.write_bytes(bytes(content[: len(content) // 2]))
    else:
        shard.unlink()

    rebuilt_shards = []
    real_collect_shard = data.collect_shard

    def counting_collect_shard(*args):
        rebuilt_shards.append(args[5])  # the shard index
        return real_collect_shard(*args)

    monkeypatch.setattr(data, "collect_shard", counting_collect_shard)
    with caplog.at_level(logging.WARNING, logger="tasks.data"):
        repaired = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert rebuilt_shards == [1]  # only the damaged shard is collected again
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any("shard_00001.h5" in message for message in warnings)
    assert_same_episodes(original, repaired)
    assert shard.read_bytes() == intact  # rebuilt byte for byte

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tasks.data"):
        collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert rebuilt_shards == [1] and not caplog.records  # the repaired cache is read cleanly


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(small_two_room, tmp_path, small_shards):
    in_process = collect(small_two_room, "expert", cache_dir=tmp_path / "one", workers=1, **SMALL)
    two_workers = collect(small_two_room, "expert", cache_dir=tmp_path / "two", workers=2, **SMALL)
    assert_same_episodes(in_process, two_workers)
    one_folder, two_folder = dataset_folder(tmp_path / "one", in_process), dataset_folder(tmp_path / "two", two_workers)
    assert {name: content for name, (_, content) in shard_files(one_folder).items()} == {
        name: content for name, (_, content) in shard_files(two_folder).items()
    }
    other_seed = collect(small_two_room, "expert", cache_dir=tmp_path / "one", workers=1, **(SMALL | {"seed": 8}))
    assert not np.array_equal(other_seed.states, in_process.states)


def test_episodes_do_not_depend_on_how_many_are_collected(small_two_room, tmp_path):
    """Episode i comes from its own seed, so a longer collection starts with the shorter one."""
    short = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **(SMALL | {"episodes": 2}))
    long = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert np.array_equal(short.pixels, long.pixels[:2]) and np.array_equal(short.actions, long.actions[:2])


def test_collect_rejects_an_unknown_policy(small_two_room, tmp_path):
    with pytest.raises(ValueError, match="policy must be one of expert, random"):
        collect(small_two_room, "scripted", cache_dir=tmp_path, **SMALL)


@pytest.fixture
def episodes(small_two_room, tmp_path):
    return collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)


def test_windows_have_the_documented_shapes_and_count(episodes):
    windows = WindowDataset(episodes, num_frames=4, frameskip=5)
    assert len(windows) == 6 * (24 - 4 * 5 + 1)
    item = windows[len(windows) - 1]
    assert item["pixels"].shape == (4, 3, 16, 16) and item["pixels"].dtype == torch.float32
    assert item["pixels"].min() >= 0.0 and item["pixels"].max() <= 1.0
    assert item["actions"].shape == (4, 10) and item["actions"].dtype == torch.float32
    assert item["states"].shape == (4, 2) and item["states"].dtype == torch.float32
    batch = next(iter(torch.utils.data.DataLoader(windows, batch_size=8)))
    assert batch["pixels"].shape == (8, 4, 3, 16, 16)


@pytest.mark.parametrize("batch_size", [8, 500])  # 500 > the windows: one short batch per epoch, not dropped
def test_training_batches_read_whole_are_the_plain_loaders_batches_in_the_same_order(episodes, batch_size):
    """infinite_batches reads each batch with WindowDataset.batch; a DataLoader over single windows, shuffled by the
    same seed and collated, gives the same tensors in the same order, epoch after epoch."""
    windows = WindowDataset(episodes, num_frames=3, frameskip=5)
    cfg = TrainConfig(batch_size=batch_size)
    fast = infinite_batches(windows, cfg, torch.device("cpu"), seed=3)
    plain = torch.utils.data.DataLoader(
        windows, batch_size=batch_size, shuffle=True, drop_last=len(windows) >= batch_size,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    expected = [batch for _ in range(2) for batch in plain]  # two epochs
    for want in expected:
        got = next(fast)
        assert got.keys() == want.keys()
        for name in want:
            assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
            assert got[name].is_contiguous()


def test_window_action_block_takes_each_frame_to_the_next(small_two_room, episodes):
    windows = WindowDataset(episodes, num_frames=3, frameskip=5)
    for index in [0, 7, len(windows) - 1]:
        episode, start = windows.locate(index)
        item = windows[index]
        raw = episodes.pixels[episode, start : start + 11 : 5]  # frames start, start+5, start+10
        assert torch.equal(item["pixels"], torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255)
        recorded = episodes.actions[episode, start : start + 15].reshape(3, 10)  # 3 blocks of 5 raw actions
        assert torch.allclose(item["actions"], torch.from_numpy(windows.scaler.transform(recorded)))  # standardised
        for t in range(3):
            state = item["states"][t].numpy()[None]
            for action in recorded[t].reshape(5, 2):  # block t: 5 raw actions, in order
                state = small_two_room.simulate(state, action[None])
            assert np.array_equal(state[0], episodes.states[episode, start + 5 * (t + 1)])
            if t < 2:
                assert np.array_equal(state[0], item["states"][t + 1].numpy())


def test_window_longer_than_the_episodes_is_rejected(episodes):
    with pytest.raises(ValueError, match="needs 25 raw steps"):
        WindowDataset(episodes, num_frames=5, frameskip=5)


def test_split_holds_out_the_last_tenth_as_views(small_two_room, tmp_path):
    episodes = collect(
        small_two_room, "random", cache_dir=tmp_path, workers=1, **(SMALL | {"episodes": 20, "steps": 6})
    )
    train, val = split_episodes(episodes, 0.1)
    assert (len(train), len(val)) == (18, 2)
    assert isinstance(train.pixels, Frames) and list(train.pixels.ids) == list(range(18))  # a view: nothing read
    assert np.array_equal(val.pixels[1, 2], episodes.pixels[19, 2]) and np.array_equal(val.states, episodes.states[18:])
    assert train.key != val.key and val.info["split"] == "val"


def test_shards_are_hashed_once_and_a_shard_changed_since_is_hashed_again(
    small_two_room, tmp_path, small_shards, monkeypatch, caplog
):
    from tasks import store

    original = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    hashed = []
    real_sha256 = store._sha256

    def counting_sha256(path):
        hashed.append(Path(path).name)
        return real_sha256(path)

    monkeypatch.setattr(store, "_sha256", counting_sha256)
    collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert hashed == []  # every shard was stamped when written: opening the cache reads no shard whole
    # Same size, new bytes: the stamp no longer matches, so the shard is hashed, fails and is rebuilt.
    shard = dataset_folder(tmp_path, original) / "shard_00001.h5"
    content = bytearray(shard.read_bytes())
    content[len(content) // 2] ^= 0xFF
    shard.write_bytes(bytes(content))
    with caplog.at_level(logging.WARNING, logger="tasks.data"):
        repaired = collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert hashed == ["shard_00001.h5"] and any("sha256" in record.getMessage() for record in caplog.records)
    assert_same_episodes(original, repaired)
    hashed.clear()
    collect(small_two_room, "expert", cache_dir=tmp_path, workers=1, **SMALL)
    assert hashed == []
