"""Offline datasets: episodes collected with a task's policy, cached on disk, served as windows.

A dataset is keyed by a hash of everything that makes its bytes (task config and
version, policy, noise, episodes, steps, seed, storage format). Episode ``i`` is drawn
from its own seed, derived from ``(seed, i)``, so the bytes do not depend on how the
work is split across processes, Ray tasks or nodes. Episodes are stored in chunked HDF5
shards (tasks/store.py) beside a manifest holding each shard's size and sha256; every
file is written to a temp name and renamed into place. A shard that is missing,
truncated or fails its checksum is rebuilt with a warning and never used. Frames are
read on demand, so memory does not grow with the dataset.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from tasks import store
from tasks.base import Task, TaskEnv
from tasks.scaler import ActionScaler

logger = logging.getLogger(__name__)

DATA_FORMAT = 2  # bump when the shard layout or the way episodes are drawn changes (2: HDF5, tasks/store.py)
SHARD_EPISODES = 10  # episodes per shard file: the unit of collection work (one Ray task) and of rebuilding
POLICIES = ("expert", "random")
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """Root of wmbench's caches: ``$WMBENCH_CACHE``, else ``<repo>/.cache/wmbench``."""
    configured = os.environ.get("WMBENCH_CACHE")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / ".cache" / "wmbench"


@dataclasses.dataclass
class Episodes:
    """Collected episodes of L steps: L + 1 frames and states, L actions each."""

    pixels: store.Frames | np.ndarray  # (E, L+1, H, W, 3) uint8, read from disk on demand
    actions: np.ndarray  # (E, L, action_dim) float32 in [-1, 1]; actions[:, t] takes frame t to t+1
    states: np.ndarray  # (E, L+1, S) float32
    key: str
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def steps(self) -> int:
        """L: raw env steps per episode."""
        return self.actions.shape[1]


def dataset_key(task: Task, policy: str, episodes: int, steps: int, seed: int, noise: float) -> str:
    """A short sha256 over a canonical JSON of everything that makes the dataset's bytes."""
    recipe = {
        "format": DATA_FORMAT,
        "shard_episodes": SHARD_EPISODES,
        "task": task.config(),
        "policy": policy,
        "noise": float(noise),
        "episodes": int(episodes),
        "steps": int(steps),
        "seed": int(seed),
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def episode_seed(seed: int, episode: int) -> np.random.SeedSequence:
    """Episode ``episode``'s own seed: the same child as ``SeedSequence(seed).spawn(n)[episode]``."""
    return np.random.SeedSequence(seed, spawn_key=(episode,))


def run_episode(
    task: Task, env: TaskEnv, policy: str, steps: int, noise: float, seed: np.random.SeedSequence
) -> dict[str, np.ndarray]:
    """Roll one episode of ``steps`` raw steps from ``seed``; the env is reset (and reseeded) first.

    Returns pixels (L+1, H, W, 3), actions (L, A), states (L+1, S) and ``policy_success``:
    whether any state came within the task's success test of the policy's ``goal``
    (NaN for a policy without one).
    """
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    act = task.expert(rng, noise) if policy == "expert" else task.random_policy(rng)
    pixels, states, actions = [obs["pixels"]], [obs["state"]], []
    for _ in range(steps):
        action = np.clip(np.asarray(act(obs), dtype=np.float32), -1.0, 1.0)
        obs, *_ = env.step(action)
        actions.append(action)
        pixels.append(obs["pixels"])
        states.append(obs["state"])
    goal = getattr(act, "goal", None)
    success = np.nan if goal is None else float(any(task.success(state, goal) for state in states))
    return {
        "pixels": np.stack(pixels),
        "actions": np.stack(actions),
        "states": np.stack(states).astype(np.float32),
        "policy_success": np.float32(success),
    }


def collect_shard(
    task: Task, policy: str, steps: int, noise: float, seed: int, index: int, start: int, stop: int
) -> bytes:
    """Collect episodes ``start..stop-1`` (shard ``index``) and return the shard file's bytes (tasks/store.py).

    Runs wherever a shard is built: in-process, in a worker process or as a Ray task on
    any node; the bytes depend on the episodes alone, and the collecting process writes them.
    """
    env = task.make_env()
    episodes = [run_episode(task, env, policy, steps, noise, episode_seed(seed, i)) for i in range(start, stop)]
    env.close()
    return store.shard_image({name: np.stack([episode[name] for episode in episodes]) for name in store.ARRAYS})


Backend = Literal["local", "ray"]


def collect(
    task: Task,
    policy: str = "expert",
    episodes: int = 100,
    steps: int | None = None,
    seed: int = 0,
    noise: float = 0.1,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = True,
    backend: Backend = "local",
    checksum: bool = True,
) -> Episodes:
    """Episodes from ``task`` with the ``policy`` ("expert" or "random"), read from the cache when present.

    ``cache_dir`` replaces :func:`cache_root`; the data live in ``<cache>/datasets/<key>/``.
    Missing or damaged shards are collected again: as one Ray task per shard over the
    cluster's CPUs with ``backend="ray"`` (Ray initialised by the caller: the sweep driver,
    ``python -m tasks.collect --address``), else in ``workers`` local processes (default
    ``min(4, cpu_count)``; 1 collects in this process). A trial collects locally: inside a
    Tune trial every CPU may be held by trials, and nested tasks would wait for ever.
    ``checksum`` verifies every shard's sha256 once: a shard whose size, modification time and
    inode are unchanged since it last matched (``verified.json``) is not hashed again, so the
    trials of a sweep do not re-read a dataset the driver collected; False checks sizes only (pixel
    chunks still carry Fletcher-32 checksums that HDF5 verifies on every read). Frames are read
    on demand (:class:`~tasks.store.Frames`); actions, states and success flags in memory.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    steps = task.episode_steps if steps is None else steps
    if episodes < 1 or steps < 1:
        raise ValueError(f"episodes and steps must be at least 1, got episodes={episodes}, steps={steps}")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be local or ray, got {backend!r}")

    key = dataset_key(task, policy, episodes, steps, seed, noise)
    folder = Path(cache_dir if cache_dir is not None else cache_root()) / "datasets" / key
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + SHARD_EPISODES, episodes)) for start in range(0, episodes, SHARD_EPISODES)]
    with _exclusive(folder):  # a second collector of the same key waits, then reads what the first wrote
        manifest = _read_manifest(folder, key, bounds)
        entries: list[dict[str, Any] | None] = list(manifest["shards"]) if manifest else [None] * len(bounds)
        missing = []
        stamps = store.read_stamps(folder)
        verified = dict(stamps)
        for index, entry in enumerate(entries):
            problem = "is not collected yet" if entry is None else store.check_shard(folder, entry, checksum, stamps)
            if problem is not None:
                if entry is not None:
                    logger.warning("dataset shard %s %s; rebuilding it", folder / entry["file"], problem)
                missing.append(index)
        frames_per_s = manifest["frames_per_s"] if manifest else None  # as measured when the data were collected
        if missing:
            job = _ShardJob(task, policy, steps, noise, seed, folder, bounds)
            frames_per_s = job.run(missing, entries, "ray" if backend == "ray" else workers, progress)
        info = {
            "task": task.config(),
            "policy": policy,
            "noise": float(noise),
            "seed": int(seed),
            "episodes": int(episodes),
            "steps": int(steps),
            "frames_per_s": frames_per_s,
        }
        if missing or manifest is None:
            record = {"format": DATA_FORMAT, "key": key, **info, "shards": entries}
            store.write_atomic(folder / MANIFEST, json.dumps(record, indent=1).encode())
        for index in missing:  # written just now from bytes whose sha256 the entry holds
            store.stamp_shard(folder, entries[index], stamps)
        if stamps != verified:
            store.write_stamps(folder, stamps)

    return open_episodes(folder, entries, key, info)


def open_episodes(folder: Path, entries: list[dict[str, Any]], key: str, info: dict[str, Any]) -> Episodes:
    """The episodes of a dataset folder whose shards (manifest ``entries``) are checked: frames on demand
    (:class:`~tasks.store.Frames`), actions, states and success flags read into memory."""
    small = [store.read_small(folder, entry) for entry in entries]
    arrays = {name: np.concatenate([part[name] for part in small]) for name in store.SMALL_ARRAYS}
    episodes = len(arrays["actions"])
    shape = (episodes, *small[0]["pixels_shape"][1:].tolist())  # (E, L+1, H, W, 3)
    success = arrays["policy_success"]
    info["policy_success_rate"] = None if np.all(np.isnan(success)) else float(np.nanmean(success.astype(np.float64)))
    return Episodes(
        pixels=store.Frames(folder, entries, shape, np.arange(episodes)),
        actions=arrays["actions"],
        states=arrays["states"],
        key=key,
        info=info,
    )


@dataclasses.dataclass
class _ShardJob:
    """Building a dataset's missing shards: the recipe, and where each built shard is written."""

    task: Task
    policy: str
    steps: int
    noise: float
    seed: int
    folder: Path
    bounds: list[tuple[int, int]]

    def arguments(self, index: int) -> tuple:
        return (self.task, self.policy, self.steps, self.noise, self.seed, index, *self.bounds[index])

    def run(
        self, missing: list[int], entries: list[dict[str, Any] | None], workers: int | str, progress: bool
    ) -> float:
        """Collect the ``missing`` shards (``workers``: a process count, or "ray"), filling ``entries``; frames/s."""
        episode_count = sum(self.bounds[index][1] - self.bounds[index][0] for index in missing)
        where = "ray" if workers == "ray" else f"{min(int(workers), len(missing))} process(es)"
        bar = tqdm(
            total=episode_count, unit="episode", desc=f"collect {self.task.name} ({where})", disable=not progress
        )
        began = time.perf_counter()
        for index, image in self._images(missing, workers):
            entries[index] = store.write_shard(self.folder, index, image, self.bounds[index])
            bar.update(self.bounds[index][1] - self.bounds[index][0])
        bar.close()
        seconds = time.perf_counter() - began
        frames_per_s = episode_count * (self.steps + 1) / seconds
        logger.info(
            "collected %d %s episodes of %s in %.1f s on %s: %.0f frames/s",
            episode_count, self.policy, self.task.name, seconds, where, frames_per_s,
        )  # fmt: skip
        return frames_per_s

    def _images(self, missing: list[int], workers: int | str) -> Iterator[tuple[int, bytes]]:
        """(shard index, file bytes) as each shard is built, in completion order."""
        if workers == "ray":
            yield from self._ray_images(missing)
        elif workers == 1 or len(missing) == 1:
            for index in missing:
                yield index, collect_shard(*self.arguments(index))
        else:
            yield from self._pool_images(missing, min(int(workers), len(missing)))

    def _pool_images(self, missing: list[int], workers: int) -> Iterator[tuple[int, bytes]]:
        # Not fork: torch or Ray may hold threads and locks. The fork server imports this
        # module (and torch) once, and each worker forks from it instead of importing again.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["__main__", __name__])
        else:
            context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(collect_shard, *self.arguments(index)): index for index in missing}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield futures[future], future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # fail now, not after the queued shards
                raise

    def _ray_images(self, missing: list[int]) -> Iterator[tuple[int, bytes]]:
        """One Ray task per shard, on any node's CPU; the bytes come back here, so no shared disk is needed."""
        import ray

        remote = ray.remote(num_cpus=1, max_retries=2)(collect_shard)
        pending = {remote.remote(*self.arguments(index)): index for index in missing}
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done), ray.get(done)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the dataset folder's lock file: one collector per dataset at a time, across processes."""
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_manifest(folder: Path, key: str, bounds: list[tuple[int, int]]) -> dict[str, Any] | None:
    """The folder's manifest if it is readable and describes this key, else None (with a warning if damaged)."""
    path = folder / MANIFEST
    if not path.exists():
        if any(folder.glob("shard_*")):
            logger.warning("dataset %s has shards but no manifest; rebuilding it", folder)
        return None
    try:
        manifest = json.loads(path.read_text())
        shard_bounds = [tuple(entry["episodes"]) for entry in manifest["shards"]]
        if manifest["key"] == key and manifest["format"] == DATA_FORMAT and shard_bounds == bounds:
            return manifest
    except (ValueError, KeyError, TypeError):
        pass
    logger.warning("dataset manifest %s is damaged or describes other data; rebuilding the dataset", path)
    return None


def split_episodes(episodes: Episodes, val_fraction: float = 0.1) -> tuple[Episodes, Episodes]:
    """Split by episode into (train, val), the last ``val_fraction`` held out (LeWM: 90/10); views, no copies."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    held_out = max(1, round(len(episodes) * val_fraction))
    if held_out >= len(episodes):
        raise ValueError(f"{len(episodes)} episodes are too few to hold out {val_fraction:.0%} and keep some to train")
    cut = len(episodes) - held_out

    def part(selection: slice, split: str) -> Episodes:
        info = copy.deepcopy(episodes.info) | {"split": split, "val_fraction": val_fraction}
        return Episodes(
            pixels=episodes.pixels[selection],
            actions=episodes.actions[selection],
            states=episodes.states[selection],
            key=f"{episodes.key}-{split}",
            info=info,
        )

    return part(slice(0, cut), "train"), part(slice(cut, None), "val")


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``num_frames`` frames ``frameskip`` raw steps apart, each with its action block.

    Block t holds the ``frameskip`` raw actions that take frame t to frame t+1, so a
    window starting at raw step s needs steps s .. s + num_frames·frameskip − 1; windows
    start at every raw step where that fits. Action blocks come standardised by ``scaler``
    (by default fitted on these episodes), the units models train and planners search in.
    """

    def __init__(self, episodes: Episodes, num_frames: int, frameskip: int, scaler: ActionScaler | None = None) -> None:
        if num_frames < 1 or frameskip < 1:
            raise ValueError(f"num_frames and frameskip must be at least 1, got {num_frames} and {frameskip}")
        span = num_frames * frameskip
        if span > episodes.steps:
            raise ValueError(
                f"a window of {num_frames} frames × frameskip {frameskip} needs {span} raw steps, "
                f"but the episodes have {episodes.steps}; use fewer frames, a smaller frameskip or longer episodes"
            )
        self.episodes = episodes
        self.num_frames = num_frames
        self.frameskip = frameskip
        self.windows_per_episode = episodes.steps - span + 1
        self.scaler = scaler or ActionScaler.fit(episodes.actions)

    def __len__(self) -> int:
        return len(self.episodes) * self.windows_per_episode

    def locate(self, index: int) -> tuple[int, int]:
        """(episode, first raw step) of window ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"window index {index} is out of range for {len(self)} windows")
        return divmod(index, self.windows_per_episode)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One window: pixels (T, 3, H, W) in [0, 1], action blocks (T, k·A) standardised, states (T, S)."""
        return {name: tensor[0] for name, tensor in self.batch([index]).items()}

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Windows ``indices`` stacked, (B, T, 3, H, W), (B, T, k·A) and (B, T, S): what the training loader reads,
        converting and standardising once per batch (the quickstart's loader: 26 → 18 ms per batch of 64)."""
        located = np.array([self.locate(index) for index in indices]).reshape(-1, 2)
        episode, start = located[:, :1], located[:, 1:]  # (B, 1) each
        span = self.num_frames * self.frameskip
        frames = np.stack([self.episodes.pixels[e, s : s + span : self.frameskip] for e, s in located])  # (B,T,H,W,3)
        steps = start + np.arange(span)  # (B, T·k): every raw step of each window
        actions = rearrange(self.episodes.actions[episode, steps], "b (t k) a -> b t (k a)", k=self.frameskip)
        return {
            "pixels": rearrange(torch.from_numpy(frames), "b t h w c -> b t c h w").contiguous().float().div_(255.0),
            "actions": torch.from_numpy(self.scaler.transform(actions)),
            "states": torch.from_numpy(self.episodes.states[episode, steps[:, :: self.frameskip]]),
        }
