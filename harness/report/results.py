"""Typed result rows and their Parquet files: one file of condition rows and one of episode rows per trial.

:class:`ConditionRow` and :class:`EpisodeRow` are the results contract (DESIGN.md "Results");
the Parquet schemas are derived from their fields, so a column exists exactly when a field
does. Rows say what they are in their own columns (``role``, ``axis``, ``magnitude``,
``variant``), so nothing is parsed back out of a string. Files are written atomically
(temp file + rename) so a killed trial never leaves a half-written result. Columns grow;
they are never silently renamed. ``root`` may be a local folder or any pyarrow filesystem
URI (``file:///...``, ``s3://...``).

This module imports nothing above it (no torch): reading results needs only pyarrow.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

Role = Literal["model", "floor", "ceiling"]
"""What a row's controller is: a world model, or a reference controller bounding it (random, oracle)."""
ROLES: tuple[str, ...] = typing.get_args(Role)
CLEAN_AXIS = "clean"  # the axis of the unperturbed condition
COMBINED_AXIS = "combined"  # the axis of a condition that perturbs several fields at once


@dataclass
class ConditionRow:
    """One row per (trial, evaluation condition); a failed trial has one row with its error."""

    sweep: str
    trial_id: str
    status: str  # "ok" | "failed"
    task: str
    model: str  # the zoo or reference-controller name
    role: str  # Role: "model" | "floor" | "ceiling"
    variant: str  # what sets this entry apart from others of its model in the sweep ("" when nothing)
    seed: int
    config: str  # the trial's spec as JSON: enough to re-run it (--from-row)
    protocol: str  # resolved protocol as JSON
    protocol_hash: str
    error: str | None = None
    condition: str | None = None  # e.g. "clean", "action_noise=0.2", "camera_shift=4"
    axis: str | None = None  # the condition field perturbed ("clean", or "combined" for several)
    magnitude: float | None = None  # that field's value (None for clean and combined)
    # Every field of tasks.conditions.Condition, by name (tests check they match).
    action_noise: float | None = None
    camera_shift: float | None = None
    camera_rotate: float | None = None
    camera_zoom: float | None = None
    sticky_prob: float | None = None
    brightness: float | None = None
    hue: float | None = None
    episodes: int | None = None
    success_rate: float | None = None
    success_ci_low: float | None = None  # Wilson 95% interval of success_rate
    success_ci_high: float | None = None
    final_distance: float | None = None
    plan_ms_median: float | None = None
    plan_ms_p95: float | None = None
    tokens_per_frame: int | None = None
    num_params: int | None = None
    train_steps: int | None = None
    train_seconds: float | None = None
    samples_per_s: float | None = None
    first_loss: float | None = None
    final_loss: float | None = None
    latent_eff_rank: float | None = None
    sigreg_stat: float | None = None
    probe_r2: float | None = None
    # Per named quantity (Task.quantities), parallel lists: the paper's probe figure is Pearson r per quantity.
    probe_quantities: list[str] | None = None
    probe_r2_by_quantity: list[float] | None = None
    probe_pearson_r: list[float] | None = None
    surprise_auroc: float | None = None
    solved_starts_resampled: int | None = None
    dataset_key: str | None = None
    data_policy: str | None = None  # how the training data was collected, e.g. "expert(noise=0.3)"
    data_policy_success: float | None = None  # that policy's measured success rate on its own goals
    case_split: str | None = None  # "heldout" | "train": where the evaluation cases came from
    encoder: str | None = None  # model.describe(): which weights the encoder has
    node: str | None = None
    device: str | None = None
    peak_mem_mb: float | None = None
    git_sha: str | None = None
    versions: str | None = None  # JSON: package -> version
    packages_hash: str | None = None  # hash of the whole installed package set
    command: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass
class EpisodeRow:
    """One row per evaluation episode; condition rows are aggregates of these."""

    trial_id: str
    task: str
    model: str
    role: str
    variant: str
    seed: int
    condition: str
    axis: str
    magnitude: float | None
    episode: int
    case_seed: int
    start: list[float]
    goal: list[float]
    success: bool
    final_distance: float
    steps: int  # raw steps until first success (or the budget)
    plan_ms: float | None  # median replanning wall-clock within the episode
    start_solved: bool
    protocol_hash: str


_ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
    list[float]: pa.list_(pa.float64()),
    list[str]: pa.list_(pa.string()),
}


def _arrow_type(hint: Any) -> pa.DataType:
    """The Arrow type of a field's annotation; ``X | None`` is a nullable X."""
    if isinstance(hint, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _arrow_type(inner)
    return _ARROW_TYPES[hint]


def schema_of(row_type: type) -> pa.Schema:
    """The Parquet schema of a row dataclass: one column per field, in field order."""
    hints = typing.get_type_hints(row_type)
    return pa.schema([(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(row_type)])


CONDITION_SCHEMA = schema_of(ConditionRow)
EPISODE_SCHEMA = schema_of(EpisodeRow)

TRIALS_DIR = "trials"
EPISODES_DIR = "episodes"


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local folder or a pyarrow filesystem URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(root)


def to_table(rows: Sequence[ConditionRow] | Sequence[EpisodeRow], row_type: type) -> pa.Table:
    """Rows of one dataclass as an Arrow table with that dataclass's schema."""
    schema = schema_of(row_type)
    wrong = [type(row).__name__ for row in rows if not isinstance(row, row_type)]
    if wrong:
        raise TypeError(f"expected {row_type.__name__} rows, got {wrong[0]}")
    columns = {name: [getattr(row, name) for row in rows] for name in schema.names}
    return pa.table(columns, schema=schema)


def write_atomic(table: pa.Table, root: str, relative_path: str) -> str:
    """Write ``table`` to ``root/relative_path`` via a temp file and a rename."""
    fs, base = _filesystem(root)
    path = f"{base.rstrip('/')}/{relative_path}"
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, temp, filesystem=fs)
    fs.move(temp, path)
    return path


def write_trial(root: str, trial_id: str, conditions: Sequence[ConditionRow], episodes: Sequence[EpisodeRow]) -> None:
    """Write one trial's episode rows, then its condition rows (the marker of a finished trial)."""
    write_atomic(to_table(episodes, EpisodeRow), root, f"{EPISODES_DIR}/{trial_id}.parquet")
    write_atomic(to_table(conditions, ConditionRow), root, f"{TRIALS_DIR}/{trial_id}.parquet")


def trial_done(root: str, trial_id: str) -> bool:
    """Whether a trial's condition rows exist (then a resumed sweep skips it)."""
    fs, base = _filesystem(root)
    info = fs.get_file_info(f"{base.rstrip('/')}/{TRIALS_DIR}/{trial_id}.parquet")
    return info.type == pafs.FileType.File


def load(root: str, table: str = TRIALS_DIR) -> pd.DataFrame:
    """All rows of one table (``"trials"`` or ``"episodes"``) under a results folder."""
    fs, base = _filesystem(root)
    folder = f"{base.rstrip('/')}/{table}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no {table}/ folder of results under {root!r}")
    schema = CONDITION_SCHEMA if table == TRIALS_DIR else EPISODE_SCHEMA
    dataset = ds.dataset(folder, format="parquet", filesystem=fs, schema=schema, exclude_invalid_files=True)
    files = [f for f in dataset.files if f.endswith(".parquet")]
    return ds.dataset(files, format="parquet", filesystem=fs, schema=schema).to_table().to_pandas()
