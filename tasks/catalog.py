"""The dataset cache as a catalog: list the cached datasets, inspect one, preview an episode's frames.

Library functions behind ``python -m harness datasets list | inspect KEY | preview KEY``
(harness/sweep/cli.py). Everything is read from ``<cache>/datasets/<key>/`` (tasks/data.py:
the manifest and the HDF5 shards of tasks/store.py); nothing is collected or rewritten. A
dataset is named by its key or by a prefix of it that no other key shares.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tasks import store
from tasks.base import task_class
from tasks.data import MANIFEST, Episodes, cache_root
from tasks.scaler import ActionScaler

PREVIEW_FRAMES = 8  # frames in an image strip, evenly spaced from the first to the last
PREVIEW_HEIGHT = 96  # px: small frames are scaled up (nearest neighbour) to at least this height
GIF_FRAME_MS = 100  # each frame of a GIF or MP4 preview shows for this long (10 frames/s)
PREVIEW_FORMATS = (".png", ".gif", ".mp4")


class CatalogError(Exception):
    """A dataset that cannot be named, read or previewed as asked (user-fixable: the message says how)."""


@dataclass(frozen=True)
class DatasetSummary:
    """One cached dataset, from its manifest: its recipe, its size on disk and when it was written."""

    key: str
    folder: Path
    task: dict[str, Any]  # Task.config(): name, version, image size and options
    policy: str
    noise: float
    seed: int
    episodes: int
    steps: int  # raw env steps per episode
    frames_per_s: float | None  # the collection rate measured when it was collected
    bytes_on_disk: int  # every file of the folder
    written: datetime  # when its manifest was last written (collected, or a damaged shard rebuilt), UTC
    shards: tuple[dict[str, Any], ...]  # the manifest's entries: file, episodes, bytes, sha256

    @property
    def task_name(self) -> str:
        return str(self.task.get("task", "?"))

    @property
    def image_size(self) -> int | None:
        return self.task.get("image_size")

    @property
    def recipe(self) -> str:
        """How the episodes were made, as result rows write it (``data_policy``), with the seed."""
        return f"{self.policy}(noise={self.noise:g}) seed {self.seed}"


@dataclass(frozen=True)
class Catalog:
    """The datasets under a cache root, oldest first, and the folders whose manifest cannot be read."""

    root: Path  # <cache>/datasets
    datasets: list[DatasetSummary]
    unreadable: dict[str, str] = field(default_factory=dict)  # folder name -> why

    def describe(self) -> str:
        """A table of the datasets, one line each, and a total."""
        if not self.datasets and not self.unreadable:
            return f"no datasets cached under {self.root}"
        header = ("key", "task", "frame", "policy", "episodes × steps", "size", "written (UTC)")
        rows = [
            (
                summary.key,
                f"{summary.task_name} v{summary.task.get('version', '?')}",
                f"{summary.image_size} px" if summary.image_size else "?",
                summary.recipe,
                f"{summary.episodes} × {summary.steps}",
                _size(summary.bytes_on_disk),
                f"{summary.written:%Y-%m-%d %H:%M}",
            )
            for summary in self.datasets
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                 for row in (header, *rows)]  # fmt: skip
        lines += [f"{name}  unreadable: {why}" for name, why in self.unreadable.items()]
        total = sum(summary.bytes_on_disk for summary in self.datasets)
        lines.append(f"{len(self.datasets)} dataset(s), {_size(total)}, under {self.root}")
        return "\n".join(lines)


@dataclass(frozen=True)
class ShardCheck:
    file: str
    episodes: tuple[int, int]  # [first, stop)
    bytes: int
    problem: str | None  # None: present, the recorded size, and its sha256 matches (hashed now)


@dataclass(frozen=True)
class DatasetReport:
    """What is inside a dataset: shapes, the policy's success, action statistics, state ranges, shard checks.

    The statistics cover the episodes of the intact shards (all of them unless a shard is damaged)."""

    summary: DatasetSummary
    pixels_shape: tuple[int, ...]  # (E, L+1, H, W, 3) uint8
    actions_shape: tuple[int, ...]  # (E, L, A) float32
    states_shape: tuple[int, ...]  # (E, L+1, S) float32
    policy_success_rate: float | None  # episodes whose state came within the success test of the policy's goal
    scaler: ActionScaler  # per raw action dimension, fitted as a WindowDataset fits it on these episodes
    state_low: tuple[float, ...]
    state_high: tuple[float, ...]
    state_names: tuple[str, ...]  # the task's named quantity each state dimension belongs to ("" if none)
    shards: tuple[ShardCheck, ...]

    @property
    def damaged(self) -> list[ShardCheck]:
        return [shard for shard in self.shards if shard.problem is not None]

    def describe(self) -> str:
        summary = self.summary
        options = {k: v for k, v in summary.task.items() if k not in ("task", "version")}
        rate = f", collected at {summary.frames_per_s:.0f} frames/s" if summary.frames_per_s else ""
        if self.policy_success_rate is None:
            success = "no success recorded (a policy without a goal)"
        else:
            success = f"{100 * self.policy_success_rate:.1f}% of episodes reached the policy's own goal"
        lines = [
            f"dataset   {summary.key}  ({summary.folder})",
            f"task      {summary.task_name} v{summary.task.get('version', '?')} {json.dumps(options)}",
            f"recipe    {summary.recipe}, {summary.episodes} episodes × {summary.steps} steps{rate}",
            f"written   {summary.written:%Y-%m-%d %H:%M} UTC, {_size(summary.bytes_on_disk)} on disk",
            f"shapes    pixels {self.pixels_shape} uint8 · actions {self.actions_shape} float32 · "
            f"states {self.states_shape} float32",
            f"policy    {success}",
            "actions   per raw dimension, as ActionScaler.fit standardises them for training and planning:",
        ]
        for dim, (mean, std) in enumerate(zip(self.scaler.mean, self.scaler.std, strict=True)):
            lines.append(f"          a[{dim}]  mean {mean:+.4f}  std {std:.4f}")
        lines.append("states    per dimension, over every frame:")
        ranges = zip(self.state_names, self.state_low, self.state_high, strict=True)
        for dim, (name, low, high) in enumerate(ranges):
            lines.append(f"          s[{dim}]{f' {name}' if name else ''}  min {low:+.4f}  max {high:+.4f}")
        if self.damaged:
            verdict = f"{len(self.damaged)} damaged (left out of the figures above; collecting again rebuilds them)"
        else:
            verdict = "all intact (size and sha256 match the manifest)"
        lines.append(f"shards    {len(self.shards)}, {verdict}")
        for shard in self.shards:
            first, stop = shard.episodes
            status = "ok" if shard.problem is None else shard.problem
            lines.append(f"          {shard.file}  episodes {first}-{stop - 1}  {_size(shard.bytes)}  {status}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- naming datasets


def catalog(root: str | Path | None = None) -> Catalog:
    """Every dataset under ``root`` (default :func:`~tasks.data.cache_root`), oldest first."""
    folder = Path(root if root is not None else cache_root()) / "datasets"
    datasets, unreadable = [], {}
    for path in sorted(folder.glob(f"*/{MANIFEST}")):
        try:
            datasets.append(_summary(path.parent))
        except (OSError, ValueError, KeyError, TypeError) as error:
            unreadable[path.parent.name] = f"{MANIFEST} cannot be read ({error})"
    return Catalog(folder, sorted(datasets, key=lambda summary: (summary.written, summary.key)), unreadable)


def find(key: str, root: str | Path | None = None) -> DatasetSummary:
    """The dataset whose key is ``key`` or starts with it; raises :class:`CatalogError` naming the known keys."""
    known = catalog(root)
    exact = [summary for summary in known.datasets if summary.key == key]
    matches = exact or [summary for summary in known.datasets if summary.key.startswith(key)]
    if len(matches) == 1:
        return matches[0]
    if not known.datasets:
        raise CatalogError(
            f"no datasets are cached under {known.root}; a sweep or `python -m tasks.collect TASK` collects them"
        )
    if not matches:
        names = ", ".join(f"{s.key} ({s.task_name} {s.image_size} px, {s.recipe})" for s in known.datasets)
        raise CatalogError(f"no cached dataset has a key starting {key!r}; known: {names}")
    raise CatalogError(
        f"{key!r} starts {len(matches)} dataset keys ({', '.join(s.key for s in matches)}); give more of the key"
    )


def _summary(folder: Path) -> DatasetSummary:
    manifest = json.loads((folder / MANIFEST).read_text())
    files = [path for path in folder.iterdir() if path.is_file()]
    return DatasetSummary(
        key=str(manifest["key"]),
        folder=folder,
        task=dict(manifest["task"]),
        policy=str(manifest["policy"]),
        noise=float(manifest["noise"]),
        seed=int(manifest["seed"]),
        episodes=int(manifest["episodes"]),
        steps=int(manifest["steps"]),
        frames_per_s=manifest.get("frames_per_s"),
        bytes_on_disk=sum(path.stat().st_size for path in files),
        written=datetime.fromtimestamp((folder / MANIFEST).stat().st_mtime, UTC),
        shards=tuple(manifest["shards"]),
    )


# --------------------------------------------------------------------------- inspecting one


def check_shards(summary: DatasetSummary) -> tuple[ShardCheck, ...]:
    """Every shard against its manifest entry, its sha256 hashed now (tasks/store.py's check, no stamps)."""
    return tuple(
        ShardCheck(
            file=entry["file"],
            episodes=(int(entry["episodes"][0]), int(entry["episodes"][1])),
            bytes=int(entry["bytes"]),
            problem=store.check_shard(summary.folder, entry, checksum=True),
        )
        for entry in summary.shards
    )


def open_episodes(summary: DatasetSummary) -> Episodes:
    """The dataset's episodes as :func:`~tasks.data.collect` returns them (frames read on demand), without the
    task or a collection: the shards are read as they are (:func:`check_shards` checks them)."""
    arrays, shape = _read_small(summary, summary.shards)
    return Episodes(
        pixels=store.Frames(summary.folder, summary.shards, shape, np.arange(summary.episodes)),
        actions=arrays["actions"],
        states=arrays["states"],
        key=summary.key,
        info={"policy_success_rate": _success_rate(arrays["policy_success"])},
    )


def inspect(summary: DatasetSummary) -> DatasetReport:
    """Shapes, the policy's success rate, per-dimension action mean and std (as the scaler fits them), state
    ranges, and every shard's check; a damaged shard is named and its episodes left out of the figures."""
    shards = check_shards(summary)
    intact = [entry for entry, shard in zip(summary.shards, shards, strict=True) if shard.problem is None]
    if not intact:
        named = "; ".join(f"{shard.file} {shard.problem}" for shard in shards)
        raise CatalogError(f"dataset {summary.key} has no intact shard ({named}); collecting it again rebuilds them")
    arrays, shape = _read_small(summary, intact)
    actions, states = arrays["actions"], arrays["states"]  # (E, L, A), (E, L+1, S)
    every_state = states.reshape(-1, states.shape[-1])
    return DatasetReport(
        summary=summary,
        pixels_shape=shape,
        actions_shape=tuple(actions.shape),
        states_shape=tuple(states.shape),
        policy_success_rate=_success_rate(arrays["policy_success"]),
        scaler=ActionScaler.fit(actions),
        state_low=tuple(float(v) for v in every_state.min(axis=0)),
        state_high=tuple(float(v) for v in every_state.max(axis=0)),
        state_names=_state_names(summary.task_name, states.shape[-1]),
        shards=shards,
    )


def _read_small(
    summary: DatasetSummary, entries: Sequence[dict[str, Any]]
) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """The shards' actions, states and policy_success concatenated, and their pixels' shape (E, L+1, H, W, 3)."""
    try:
        small = [store.read_small(summary.folder, entry) for entry in entries]
    except OSError as error:
        raise CatalogError(
            f"dataset {summary.key} cannot be read ({error}); `python -m harness datasets inspect {summary.key}` "
            "names a damaged shard, and collecting the dataset again rebuilds it"
        ) from error
    arrays = {name: np.concatenate([part[name] for part in small]) for name in store.SMALL_ARRAYS}
    episodes = sum(int(part["pixels_shape"][0]) for part in small)
    return arrays, (episodes, *(int(n) for n in small[0]["pixels_shape"][1:]))


def _success_rate(success: np.ndarray) -> float | None:
    """The policy's success rate over episodes, as collect() reports it; None for a policy without a goal."""
    return None if np.all(np.isnan(success)) else float(np.nanmean(success.astype(np.float64)))


def _state_names(task: str, size: int) -> tuple[str, ...]:
    """The task's named quantity of each state dimension (Task.quantities), "" where none or the task is unknown."""
    try:
        quantities = task_class(task).quantities
    except (ValueError, ImportError):  # a task not registered here, or whose packages are missing
        quantities = {}
    names = [""] * size
    for name, dims in quantities.items():
        for dim in dims:
            if dim < size:
                names[dim] = name
    return tuple(names)


# --------------------------------------------------------------------------- previewing frames


def preview(summary: DatasetSummary, out: str | Path, episode: int = 0, frames: int = PREVIEW_FRAMES) -> Path:
    """Write episode ``episode`` as an image strip (``.png``: ``frames`` frames evenly spaced, first to last) or
    as an animation of every frame (``.gif`` with Pillow; ``.mp4`` with imageio and its ffmpeg plugin, if installed)."""
    out = Path(out)
    if out.suffix.lower() not in PREVIEW_FORMATS:
        raise CatalogError(f"--out must end in {', '.join(PREVIEW_FORMATS)}, got {out.name!r}")
    if not 0 <= episode < summary.episodes:
        raise CatalogError(
            f"episode {episode} is out of range; dataset {summary.key} has episodes 0..{summary.episodes - 1}"
        )
    if frames < 1:
        raise CatalogError(f"frames must be at least 1, got {frames}")
    pixels = open_episodes(summary).pixels  # (E, L+1, H, W, 3), read on demand
    length = pixels.shape[1]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        steps = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
        _strip([pixels[episode, int(step)] for step in steps], [int(step) for step in steps]).save(out)
        return out
    clip = _enlarged(pixels[episode, ::1])  # (L+1, H', W', 3)
    if out.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in clip]
        images[0].save(out, save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)
        return out
    _write_mp4(clip, out)
    return out


def _enlarged(frames: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) frames scaled up by a whole factor (nearest neighbour) to at least PREVIEW_HEIGHT px."""
    factor = max(1, math.ceil(PREVIEW_HEIGHT / frames.shape[-3]))
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def _strip(frames: list[np.ndarray], steps: list[int]) -> Any:
    """Frames side by side, each enlarged and captioned with its env step, as a PIL image."""
    from PIL import Image, ImageDraw

    tiles = [_enlarged(frame) for frame in frames]
    height, width = tiles[0].shape[:2]
    gap, caption = 4, 14
    strip = Image.new("RGB", (len(tiles) * (width + gap) - gap, height + caption), "white")
    draw = ImageDraw.Draw(strip)
    for index, (tile, step) in enumerate(zip(tiles, steps, strict=True)):
        left = index * (width + gap)
        strip.paste(Image.fromarray(tile), (left, caption))
        draw.text((left + 2, 1), f"t={step}", fill="black")
    return strip


def _write_mp4(frames: np.ndarray, out: Path) -> None:
    if importlib.util.find_spec("imageio") is None or not any(
        importlib.util.find_spec(backend) for backend in ("imageio_ffmpeg", "av")
    ):
        raise CatalogError(
            "an .mp4 preview needs imageio with an ffmpeg or PyAV plugin (pip install imageio imageio-ffmpeg), "
            "which is not installed; .png and .gif need nothing more"
        )
    import imageio.v3 as iio

    iio.imwrite(out, frames, fps=1000 / GIF_FRAME_MS)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
