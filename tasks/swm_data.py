"""Datasets of the authors' library (stable-worldmodel) converted once into wmbench's own dataset store.

Their datasets hold one row per env step, episode after episode: ``pixels`` (H, W, 3) uint8, the
raw ``action`` taken at that step (it moves frame t to t+1; the last row's is a placeholder) and
the env's info columns (``state``, ``proprio``, ...). Two of their formats are read (checked on
stable-worldmodel 0.1.1, tests/fixtures/swm):

* HDF5 (their ``HDF5Writer``): one ``.h5`` file, a dataset per column with the rows of every
  episode, plus ``ep_len`` and ``ep_offset``; read with h5py, a wmbench dependency.
* Lance (their default, ``LanceWriter``): a ``<name>.lance`` table with ``episode_idx`` and
  ``step_idx``, JPEG-encoded ``pixels`` and float32 fixed-size-list columns; read with ``pylance``,
  the optional extra ``wmbench[swm]`` (an 85 MB wheel); frames decoded by Pillow, pixel for pixel
  what their reader's torchvision decoder returns.

Why a conversion and not a reader inside trials: once converted, the data are ordinary wmbench
shards (tasks/store.py) with a manifest of sha256s, so a trial reads them with the one reader
every dataset uses, frames on demand, damage detected by the same checksums, and the checkpoint
cache keys models by the converted data's content key. The conversion streams one shard of
episodes at a time, so memory does not grow with the dataset.

wmbench's episodes share one length: ``steps`` raw steps (``steps + 1`` frames) per episode, by
default the median episode's; longer episodes are cut there and shorter ones left out (counted in
the manifest). The frames must already be the task's size, the actions and states its widths; the
actions are stored as they were recorded (the trial standardises them per dataset, tasks/scaler.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from tasks import store
from tasks.base import Task
from tasks.data import DATA_FORMAT, MANIFEST, SHARD_EPISODES, Episodes, cache_root, open_episodes

logger = logging.getLogger(__name__)

Format = Literal["hdf5", "lance"]
IMPORT_VERSION = 1  # bump when the conversion's output changes for the same source
LANCE_EXTRA = "reading a stable-worldmodel Lance dataset needs pylance: pip install 'wmbench[swm]'"
INDEX_COLUMNS = ("episode_idx", "step_idx")  # their Lance writer's episode and step index columns


class SWMDataError(ValueError):
    """A stable-worldmodel dataset that cannot be converted or used: the message names the path and why."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which of their columns become wmbench's frames, actions and states."""

    pixels: str = "pixels"
    action: str = "action"
    state: str = "state"


class SWMReader:
    """Episodes of one stable-worldmodel dataset (HDF5 or Lance), read one at a time."""

    def __init__(self, path: str | Path, fmt: Format | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.exists():
            raise SWMDataError(f"stable-worldmodel dataset {str(self.path)!r} does not exist")
        self.format = fmt or detect_format(self.path)
        if self.format == "hdf5":
            self.path = _single(self.path, ("*.h5", "*.hdf5"), "HDF5 file")
            self._file = h5py.File(self.path, "r")
            if "ep_len" not in self._file or "ep_offset" not in self._file:
                raise SWMDataError(f"{self.path} has no ep_len / ep_offset datasets: not a stable-worldmodel HDF5 file")
            self.lengths = self._file["ep_len"][()].astype(np.int64)
            self.offsets = self._file["ep_offset"][()].astype(np.int64)
            self.columns = [name for name in self._file if name not in ("ep_len", "ep_offset")]
        elif self.format == "lance":
            self.path = _single(self.path, ("*.lance",), "Lance table")
            try:
                import lance
            except ImportError:
                raise SWMDataError(LANCE_EXTRA) from None
            self._table = lance.dataset(str(self.path))
            self.columns = [name for name in self._table.schema.names if name not in INDEX_COLUMNS]
            episode = self._table.to_table(columns=[INDEX_COLUMNS[0]]).column(0).to_numpy()
            if len(episode) > 1 and (np.diff(episode) < 0).any():
                raise SWMDataError(f"{self.path} is not episode-contiguous (episode_idx decreases)")
            starts = np.concatenate([[0], np.flatnonzero(np.diff(episode)) + 1]) if len(episode) else np.array([])
            self.offsets = starts.astype(np.int64)
            self.lengths = np.diff(np.concatenate([starts, [len(episode)]])).astype(np.int64)
        else:
            raise SWMDataError(f"format {self.format!r} is not supported; known: hdf5, lance")

    def episode(self, index: int, columns: Columns) -> dict[str, np.ndarray]:
        """Episode ``index``'s rows: pixels (n, H, W, 3) uint8, actions (n, A), states (n, S) float32."""
        missing = [name for name in dataclasses.astuple(columns) if name not in self.columns]
        if missing:
            raise SWMDataError(
                f"{self.path} has no column(s) {', '.join(missing)}; its columns: {', '.join(self.columns)}"
            )
        rows = range(int(self.offsets[index]), int(self.offsets[index] + self.lengths[index]))
        if self.format == "hdf5":
            read = {name: self._h5(name, rows) for name in dataclasses.astuple(columns)}
        else:
            read = self._lance(rows, columns)
        pixels = read[columns.pixels]
        if pixels.ndim == 4 and pixels.shape[-1] != 3 and pixels.shape[1] == 3:  # stored channel-first
            pixels = pixels.transpose(0, 2, 3, 1)
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise SWMDataError(f"{self.path}: column {columns.pixels!r} holds {pixels.dtype} {pixels.shape}, "
                               "not RGB uint8 frames")  # fmt: skip
        flat = {name: read[name].reshape(len(rows), -1).astype(np.float32) for name in (columns.action, columns.state)}
        return {"pixels": np.ascontiguousarray(pixels), "actions": flat[columns.action], "states": flat[columns.state]}

    def _h5(self, name: str, rows: range) -> np.ndarray:
        try:
            return self._file[name][rows.start : rows.stop]
        except OSError as error:  # e.g. a Blosc/LZ4 filter of hdf5plugin's
            raise SWMDataError(
                f"{self.path}: column {name!r} cannot be read ({error}); a compression filter may need "
                "`pip install hdf5plugin` and `import hdf5plugin`"
            ) from None

    def _lance(self, rows: range, columns: Columns) -> dict[str, np.ndarray]:
        import pyarrow as pa

        names = list(dict.fromkeys(dataclasses.astuple(columns)))
        table = self._table.take(list(rows), columns=names)
        read = {}
        for name in names:
            column = table.column(name).combine_chunks()
            if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):  # JPEG-encoded frames
                read[name] = np.stack([_decode(blob) for blob in column.to_pylist()])
            elif pa.types.is_fixed_size_list(column.type):
                read[name] = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
            else:
                read[name] = column.to_numpy(zero_copy_only=False)
        return read

    def sha256(self) -> str:
        """sha256 over the source's files (names and bytes): what the converted dataset's key is made of."""
        digest = hashlib.sha256()
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for file in files:
            digest.update(str(file.relative_to(self.path.parent)).encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()


def _decode(blob: bytes) -> np.ndarray:
    """One encoded frame -> (H, W, 3) uint8, by Pillow (the same pixels as their reader's torchvision decode)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image.convert("RGB"))


def detect_format(path: Path) -> Format:
    """``hdf5`` for a .h5/.hdf5 file (or a folder holding one), ``lance`` for a .lance table (or one holding one)."""
    if path.suffix in (".h5", ".hdf5") or (path.is_dir() and any(path.glob("*.h5"))):
        return "hdf5"
    if path.suffix == ".lance" or (path.is_dir() and any(path.glob("*.lance"))):
        return "lance"
    raise SWMDataError(f"{str(path)!r} is neither a stable-worldmodel HDF5 file nor a Lance table (.h5, .lance)")


def _single(path: Path, patterns: tuple[str, ...], what: str) -> Path:
    """``path`` itself, or the one file or table matching ``patterns`` in the folder ``path``."""
    if path.is_file() or path.suffix == ".lance":
        return path
    found = sorted(match for pattern in patterns for match in path.glob(pattern))
    if len(found) != 1:
        raise SWMDataError(f"{path} holds {len(found)} {what}s; name the one to convert")
    return found[0]


def convert(
    source: str | Path,
    task: Task,
    fmt: Format | None = None,
    steps: int | None = None,
    columns: Columns = Columns(),  # noqa: B008 - frozen
    out: str | Path | None = None,
) -> Episodes:
    """Convert a stable-worldmodel dataset for ``task`` into wmbench's store (once: the same source and options
    are read back from the folder) and return its episodes. ``out`` defaults to
    ``<cache>/datasets/swm-<key>``; :func:`open_converted` opens it again, e.g. in a trial (``data.source``)."""
    reader = SWMReader(source, fmt)
    usable = reader.lengths - 1  # raw steps: n rows hold n frames and n - 1 actions
    if steps is None:
        steps = int(np.median(usable)) if len(usable) else 0
    kept = np.flatnonzero(usable >= steps)
    if steps < 1 or not len(kept):
        raise SWMDataError(f"{reader.path}: no episode has {steps} steps (episode steps: {sorted(set(usable))})")
    recipe = {
        "import": IMPORT_VERSION,
        "format": DATA_FORMAT,
        "shard_episodes": SHARD_EPISODES,
        "source_sha256": reader.sha256(),
        "columns": dataclasses.asdict(columns),
        "steps": int(steps),
        "task": task.config(),
    }
    key = "swm-" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(out) if out is not None else cache_root() / "datasets" / key
    if (folder / MANIFEST).exists():
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("key") == key:
                return open_converted(folder)
        except (ValueError, SWMDataError) as error:
            logger.warning("converted dataset %s is damaged (%s); converting again", folder, error)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, start in enumerate(range(0, len(kept), SHARD_EPISODES)):
        chosen = kept[start : start + SHARD_EPISODES]
        episodes = [_cut(reader.episode(int(e), columns), steps, task, reader.path) for e in chosen]
        arrays = {name: np.stack([episode[name] for episode in episodes]) for name in ("pixels", "actions", "states")}
        arrays["policy_success"] = np.full(len(chosen), np.nan, dtype=np.float32)  # not recorded by their writers
        bounds = (start, start + len(chosen))
        entries.append(store.write_shard(folder, index, store.shard_image(arrays), bounds))
    info = {
        "task": task.config(),
        "policy": "imported",
        "episodes": len(kept),
        "steps": int(steps),
        "source": {
            "path": str(reader.path),
            "format": reader.format,
            "sha256": recipe["source_sha256"],
            "columns": dataclasses.asdict(columns),
            "episodes": len(reader.lengths),
            "left_out_shorter": int(len(reader.lengths) - len(kept)),
        },  # fmt: skip
    }
    manifest = {"format": DATA_FORMAT, "key": key, **info, "shards": entries}
    store.write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    logger.info("converted %d of %d episodes (%d steps) of %s into %s", len(kept), len(reader.lengths), steps,
                reader.path, folder)  # fmt: skip
    return open_converted(folder)


def _cut(episode: dict[str, np.ndarray], steps: int, task: Task, where: Path) -> dict[str, np.ndarray]:
    """The first ``steps`` steps of an episode (``steps + 1`` frames and states), checked against ``task``."""
    pixels, actions, states = episode["pixels"][: steps + 1], episode["actions"][:steps], episode["states"][: steps + 1]
    size = task.image_size
    if pixels.shape[1:] != (size, size, 3):
        raise SWMDataError(
            f"{where}: frames are {pixels.shape[1]}×{pixels.shape[2]}; task {task.name} renders {size}×{size} "
            f"(convert for the task at image_size {pixels.shape[1]}: --image-size {pixels.shape[1]})"
        )
    for name, array, width in (("action", actions, task.action_dim), ("state", states, task.state_dim)):
        if array.shape[1] != width:
            raise SWMDataError(f"{where}: {name}s have {array.shape[1]} values; task {task.name}'s have {width}")
        if not np.isfinite(array).all():
            raise SWMDataError(f"{where}: an episode's {name}s hold NaN or inf within its first {steps} steps")
    return {"pixels": pixels, "actions": actions, "states": states}


def open_converted(folder: str | Path, task: Task | None = None) -> Episodes:
    """A converted dataset's episodes, every shard checked against its manifest's sha256 (hashed once, then
    stamped, as collected datasets are); with ``task``, SWMDataError unless the data fit it."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        key, entries = manifest["key"], manifest["shards"]
    except (OSError, ValueError, KeyError) as error:
        raise SWMDataError(
            f"{str(folder)!r} is not a converted dataset ({error}); make one with python -m tasks.convert_swm"
        ) from None
    stamps = store.read_stamps(folder)
    verified = dict(stamps)
    for entry in entries:
        problem = store.check_shard(folder, entry, True, stamps)
        if problem is not None:
            raise SWMDataError(
                f"converted dataset shard {folder / entry['file']} {problem}; convert the source again "
                f"({manifest.get('source', {}).get('path', '?')})"
            )
    if stamps != verified:
        store.write_stamps(folder, stamps)
    info = {name: value for name, value in manifest.items() if name not in ("format", "key", "shards")}
    episodes = open_episodes(folder, entries, key, info)
    if task is not None:
        fits(episodes, task, folder)
    return episodes


def fits(episodes: Episodes, task: Task, where: Path | str) -> None:
    """SWMDataError unless ``episodes`` have ``task``'s frame size, action and state widths."""
    size = task.image_size
    shape = (episodes.pixels.shape[2:], episodes.actions.shape[-1], episodes.states.shape[-1])
    if shape != ((size, size, 3), task.action_dim, task.state_dim):
        raise SWMDataError(
            f"dataset {str(where)!r} holds {shape[0][0]} px frames, {shape[1]}-D actions and {shape[2]}-D states; "
            f"task {task.name} at image_size {size} has {size} px, {task.action_dim}-D and {task.state_dim}-D"
        )


def source_problem(folder: str | Path, task: str, image_size: int) -> str | None:
    """Why the converted dataset in ``folder`` does not fit ``task`` at ``image_size`` (its manifest's), or None."""
    try:
        converted_for = json.loads((Path(folder) / MANIFEST).read_text())["task"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"data.source {str(folder)!r} is not a converted dataset ({error})"
    if (converted_for.get("task"), converted_for.get("image_size")) != (task, image_size):
        return (
            f"data.source {str(folder)!r} was converted for {converted_for.get('task')} at "
            f"{converted_for.get('image_size')} px; the trial's task is {task} at {image_size} px"
        )
    return None
