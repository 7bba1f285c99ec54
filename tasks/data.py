"""Offline datasets: episodes collected with a task's policy, cached on disk, served as windows.

A dataset is keyed by a hash of everything that makes its bytes (task config and
version, policy, noise, episodes, steps, seed, storage format). Episode ``i`` is drawn
from its own seed, derived from ``(seed, i)``, so the bytes do not depend on how the
work is split across processes. Episodes are stored in compressed ``.npz`` shards
beside a manifest holding each shard's sha256 and shapes; every file is written to a
temp name and renamed into place. A shard that is missing, truncated or fails its
checksum is rebuilt with a warning and never used.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from tasks.base import Task, TaskEnv
from tasks.scaler import ActionScaler

logger = logging.getLogger(__name__)

DATA_FORMAT = 1  # bump when the shard layout or the way episodes are drawn changes
SHARD_EPISODES = 50  # episodes per shard file
POLICIES = ("expert", "random")
ARRAYS = ("pixels", "actions", "states", "policy_success")
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """Root of wmbench's caches: ``$WMBENCH_CACHE``, else ``<repo>/.cache/wmbench``."""
    configured = os.environ.get("WMBENCH_CACHE")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / ".cache" / "wmbench"


@dataclasses.dataclass
class Episodes:
    """Collected episodes of L steps: L + 1 frames and states, L actions each."""

    pixels: np.ndarray  # (E, L+1, H, W, 3) uint8
    actions: np.ndarray  # (E, L, action_dim) float32 in [-1, 1]; actions[:, t] takes frame t to t+1
    states: np.ndarray  # (E, L+1, S) float32
    key: str
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.pixels)

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
    task: Task, policy: str, steps: int, noise: float, seed: int, index: int, start: int, stop: int, folder: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Collect episodes ``start..stop-1`` and write them as shard ``index`` in ``folder``.

    Runs in a worker process (or in-process for ``workers=1``); returns the shard's
    manifest entry and its arrays, so the caller need not read the file back.
    """
    env = task.make_env()
    episodes = [run_episode(task, env, policy, steps, noise, episode_seed(seed, i)) for i in range(start, stop)]
    env.close()
    arrays = {name: np.stack([episode[name] for episode in episodes]) for name in ARRAYS}
    entry = write_shard(Path(folder), index, arrays)
    entry["episodes"] = [start, stop]
    return entry, arrays


def write_shard(folder: Path, index: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write ``arrays`` as ``shard_<index>.npz`` (zip, deflate level 1) atomically; return its entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
    data = buffer.getvalue()
    name = f"shard_{index:05d}.npz"
    _write_atomic(folder / name, data)
    return {
        "file": name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "shapes": {key: list(array.shape) for key, array in arrays.items()},
        "dtypes": {key: str(array.dtype) for key, array in arrays.items()},
    }


def read_shard(folder: Path, entry: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The shard's arrays if its file matches the manifest entry (size, sha256, shapes); else None, with a warning."""
    path = folder / entry["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        logger.warning("dataset shard %s is missing; rebuilding it", path)
        return None
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        logger.warning("dataset shard %s is truncated or corrupt (checksum mismatch); rebuilding it", path)
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        logger.warning("dataset shard %s cannot be read (%s); rebuilding it", path, error)
        return None
    for name, array in arrays.items():
        if list(array.shape) != entry["shapes"][name] or str(array.dtype) != entry["dtypes"][name]:
            logger.warning("dataset shard %s holds %s of the wrong shape or dtype; rebuilding it", path, name)
            return None
    return arrays


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
) -> Episodes:
    """Episodes from ``task`` with the ``policy`` ("expert" or "random"), read from the cache when present.

    ``cache_dir`` replaces :func:`cache_root`; the data live in ``<cache>/datasets/<key>/``.
    Missing or damaged shards are collected in ``workers`` processes (default
    ``min(4, cpu_count)``; 1 collects in this process).
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    steps = task.episode_steps if steps is None else steps
    if episodes < 1 or steps < 1:
        raise ValueError(f"episodes and steps must be at least 1, got episodes={episodes}, steps={steps}")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    key = dataset_key(task, policy, episodes, steps, seed, noise)
    folder = Path(cache_dir if cache_dir is not None else cache_root()) / "datasets" / key
    folder.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + SHARD_EPISODES, episodes)) for start in range(0, episodes, SHARD_EPISODES)]
    manifest = _read_manifest(folder, key, bounds)
    entries: list[dict[str, Any] | None] = list(manifest["shards"]) if manifest else [None] * len(bounds)

    dataset = _Assembly(episodes)
    missing = []
    for index, entry in enumerate(entries):
        arrays = read_shard(folder, entry) if entry is not None else None
        if arrays is None:
            missing.append(index)
        else:
            dataset.add(bounds[index][0], arrays)
    frames_per_s = manifest["frames_per_s"] if manifest else None  # as measured when the data were collected
    if missing:
        frames_per_s = _build_shards(
            task, policy, steps, noise, seed, folder, bounds, missing, entries, dataset, workers, progress
        )
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
        _write_atomic(
            folder / MANIFEST,
            json.dumps({"format": DATA_FORMAT, "key": key, **info, "shards": entries}, indent=1).encode(),
        )

    success = dataset.arrays["policy_success"]
    info["policy_success_rate"] = None if np.all(np.isnan(success)) else float(np.nanmean(success.astype(np.float64)))
    return Episodes(
        pixels=dataset.arrays["pixels"],
        actions=dataset.arrays["actions"],
        states=dataset.arrays["states"],
        key=key,
        info=info,
    )


class _Assembly:
    """Whole-dataset arrays filled shard by shard, so memory peaks at the dataset plus one shard."""

    def __init__(self, episodes: int) -> None:
        self.episodes = episodes
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, start: int, shard: dict[str, np.ndarray]) -> None:
        for name, array in shard.items():
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.episodes, *array.shape[1:]), dtype=array.dtype)
            self.arrays[name][start : start + len(array)] = array


def _build_shards(
    task: Task,
    policy: str,
    steps: int,
    noise: float,
    seed: int,
    folder: Path,
    bounds: list[tuple[int, int]],
    missing: list[int],
    entries: list[dict[str, Any] | None],
    dataset: _Assembly,
    workers: int,
    progress: bool,
) -> float:
    """Collect the ``missing`` shards into ``dataset``, recording their ``entries``; returns frames/s."""
    episode_count = sum(bounds[index][1] - bounds[index][0] for index in missing)
    workers = min(workers, len(missing))
    bar = tqdm(total=episode_count, unit="episode", desc=f"collect {task.name}", disable=not progress)
    began = time.perf_counter()
    jobs = [(task, policy, steps, noise, seed, index, *bounds[index], str(folder)) for index in missing]
    if workers == 1:
        results = (collect_shard(*job) for job in jobs)
        for index, (entry, arrays) in zip(missing, results, strict=True):
            entries[index] = entry
            dataset.add(bounds[index][0], arrays)
            bar.update(len(arrays["pixels"]))
    else:
        # Not fork: torch or Ray may hold threads and locks. The fork server imports this
        # module (and torch) once, and each worker forks from it instead of importing again.
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["__main__", __name__])
        else:
            context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(collect_shard, *job): index for index, job in zip(missing, jobs, strict=True)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    entry, arrays = future.result()
                    entries[futures[future]] = entry
                    dataset.add(bounds[futures[future]][0], arrays)
                    bar.update(len(arrays["pixels"]))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # fail now, not after the queued shards
                raise
    bar.close()
    seconds = time.perf_counter() - began
    frames_per_s = episode_count * (steps + 1) / seconds
    logger.info(
        "collected %d %s episodes of %s in %.1f s with %d worker(s): %.0f frames/s",
        episode_count,
        policy,
        task.name,
        seconds,
        workers,
        frames_per_s,
    )
    return frames_per_s


def _read_manifest(folder: Path, key: str, bounds: list[tuple[int, int]]) -> dict[str, Any] | None:
    """The folder's manifest if it is readable and describes this key, else None (with a warning if damaged)."""
    path = folder / MANIFEST
    if not path.exists():
        if any(folder.glob("shard_*.npz")):
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it into place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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
        episode, start = self.locate(index)
        stop = start + self.num_frames * self.frameskip
        frames = torch.from_numpy(self.episodes.pixels[episode, start : stop : self.frameskip])  # (T, H, W, 3) view
        actions = self.episodes.actions[episode, start:stop]  # (T·frameskip, A)
        return {
            "pixels": rearrange(frames, "t h w c -> t c h w").float().div_(255.0),
            "actions": torch.tensor(self.scaler.transform(rearrange(actions, "(t k) a -> t (k a)", k=self.frameskip))),
            "states": torch.tensor(self.episodes.states[episode, start : stop : self.frameskip]),
        }
