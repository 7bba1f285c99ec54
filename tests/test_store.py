"""The streaming dataset store: frames read on demand, memory independent of the dataset, Ray collection
giving the same bytes as local collection, one collector per dataset, damaged chunks caught when read."""

import hashlib
import pickle
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import ray
import torch

import tasks.data as data
from tasks import store
from tasks.data import WindowDataset, collect
from tasks.store import Frames

SMALL = {"steps": 24, "seed": 7, "noise": 0.1, "progress": False}


def shard_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("shard_*.h5"))}


def test_frames_read_what_the_episodes_rendered_in_every_index_form(small_two_room, tmp_path, small_shards):
    episodes = collect(small_two_room, "expert", episodes=7, cache_dir=tmp_path, workers=1, **SMALL)
    frames = episodes.pixels
    assert isinstance(frames, Frames) and frames.shape == (7, 25, 16, 16, 3) and len(frames) == 7
    rendered = np.stack([small_two_room.render(episodes.states[e]) for e in range(7)])  # (E, L+1, H, W, 3)
    assert np.array_equal(frames[5, 3], rendered[5, 3])  # episode 5 lives in the second shard
    assert np.array_equal(frames[6, 2:20:5], rendered[6, 2:20:5])
    assert np.array_equal(frames[-1, -1], rendered[6, 24])
    assert np.array_equal(frames[:, 0:25:6], rendered[:, 0:25:6])
    view = frames[4:6]
    assert isinstance(view, Frames) and np.array_equal(np.asarray(view), rendered[4:6])
    with pytest.raises(IndexError):
        frames[7, 0]


def test_a_dataset_in_memory_is_its_index_not_its_frames(small_two_room, tmp_path):
    """What a trial holds of the frames (and pickles into loader workers) is an index: shards and episode ids."""
    per_episode = {}
    for count in (10, 40):
        episodes = collect(small_two_room, "random", episodes=count, cache_dir=tmp_path, workers=1, **SMALL)
        frame_bytes = np.prod(episodes.pixels.shape[1:])  # one episode's frames: 25 × 16 × 16 × 3
        per_episode[count] = len(pickle.dumps(episodes.pixels)) / count
        assert per_episode[count] < 0.01 * frame_bytes
    assert per_episode[40] < per_episode[10]  # a fixed part plus a few bytes per episode


def test_windows_load_through_worker_processes_as_in_process(small_two_room, tmp_path, small_shards):
    episodes = collect(small_two_room, "expert", episodes=6, cache_dir=tmp_path, workers=1, **SMALL)
    windows = WindowDataset(episodes, num_frames=3, frameskip=5)
    expected = torch.stack([windows[i]["pixels"] for i in range(len(windows))])
    loader = torch.utils.data.DataLoader(windows, batch_size=8, num_workers=2, multiprocessing_context="fork")
    loaded = torch.cat([batch["pixels"] for batch in loader])
    assert torch.equal(loaded, expected)


def test_ray_collection_writes_the_same_bytes_as_local_collection(small_two_room, tmp_path, small_shards):
    local = collect(small_two_room, "expert", episodes=7, cache_dir=tmp_path / "local", workers=1, **SMALL)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spread = collect(small_two_room, "expert", episodes=7, cache_dir=tmp_path / "ray", backend="ray", **SMALL)
    finally:
        ray.shutdown()
    folders = [root / "datasets" / local.key for root in (tmp_path / "local", tmp_path / "ray")]
    assert spread.key == local.key and len(shard_hashes(folders[0])) == 3
    assert shard_hashes(folders[0]) == shard_hashes(folders[1])


def test_two_collectors_of_one_dataset_collect_it_once(small_two_room, tmp_path, small_shards, monkeypatch):
    built, real = [], data.collect_shard

    def counting(*args):
        built.append(args[5])
        return real(*args)

    monkeypatch.setattr(data, "collect_shard", counting)
    results = []

    def collector():
        results.append(collect(small_two_room, "expert", episodes=6, cache_dir=tmp_path, workers=1, **SMALL))

    threads = [threading.Thread(target=collector) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(built) == [0, 1]  # each shard once: the second collector waited on the lock, then read
    assert np.array_equal(results[0].actions, results[1].actions)


def test_a_damaged_chunk_is_caught_when_read_even_without_the_open_checksum(small_two_room, tmp_path, small_shards):
    episodes = collect(small_two_room, "random", episodes=3, cache_dir=tmp_path, workers=1, **SMALL)
    path = tmp_path / "datasets" / episodes.key / "shard_00000.h5"
    with h5py.File(path, "r") as file:  # where episode 1, frame 4's chunk lies in the file
        offset = file["pixels"].id.get_chunk_info_by_coord((1, 4, 0, 0, 0)).byte_offset
    content = bytearray(path.read_bytes())
    content[offset + 8 : offset + 16] = bytes(255 - b for b in content[offset + 8 : offset + 16])
    path.write_bytes(bytes(content))
    unchecked = collect(small_two_room, "random", episodes=3, cache_dir=tmp_path, workers=1, checksum=False, **SMALL)
    assert unchecked.pixels[1, 3].shape == (16, 16, 3)  # other chunks still read
    with pytest.raises(OSError):
        unchecked.pixels[1, 4]


def test_at_most_a_few_shard_files_stay_open_however_many_are_read(small_two_room, tmp_path, small_shards, monkeypatch):
    """Each open HDF5 file holds a few MB of metadata: an LRU bounds them, so memory does not grow with shards."""
    monkeypatch.setattr(store, "MAX_OPEN_SHARDS", 2)
    episodes = collect(small_two_room, "expert", episodes=9, cache_dir=tmp_path, workers=1, **SMALL)  # 3 shards
    frames = episodes.pixels
    first = [frames[e, 2] for e in range(9)]
    assert len(frames._files) == 2
    assert all(np.array_equal(frames[e, 2], first[e]) for e in (0, 8, 4, 0))  # evicted shards reopen
    assert np.array_equal(first[7], small_two_room.render(episodes.states[7, 2][None])[0])


def test_training_in_random_order_over_a_quickstart_sized_dataset_opens_each_shard_once(
    small_two_room, tmp_path, small_shards
):
    """The quickstart's 200 episodes make 20 shards: all stay open, where an LRU of 8 reopened one every ~2 windows."""
    episodes = collect(small_two_room, "random", episodes=60, cache_dir=tmp_path, workers=1, **SMALL)  # 20 shards
    windows = WindowDataset(episodes, num_frames=2, frameskip=1)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0)).tolist()
    for index in order[:200]:
        windows[index]
    opened = {shard: id(pixels) for shard, pixels in episodes.pixels._files.items()}
    for index in order[200:400]:
        windows[index]
    assert len(opened) == 20 and {shard: id(p) for shard, p in episodes.pixels._files.items()} == opened
