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

import contextlib
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
    # How a model's figures were obtained (None for reference controllers and for files from before these columns).
    plan_precision: str | None = None  # "fp32" | "bf16": what the planner's rollout ran in on this device
    plan_compile: bool | None = None  # the rollout was torch.compiled
    plan_cuda_graphs: bool | None = None  # each CEM iteration replayed a captured CUDA graph (only ever on CUDA)
    train_precision: str | None = None  # "fp32" | "bf16": what training ran in (None: a checkpoint that did not say)
    train_compile: bool | None = None  # the loss was torch.compiled in training
    malloc_tunables: str | None = None  # GLIBC_TUNABLES of the trial's process ("": glibc's defaults)
    # A hash of the evaluation cases (task, version, source dataset, each case's seed, start and goal):
    # rows of two sweeps are ranked together only when it and protocol_hash agree. "": not recorded (old rows).
    case_fingerprint: str = ""
    # Factors of variation: the rest of tasks.conditions.Condition's fields, each a strength in [0, 1] of a change
    # the task declares (Task.factors); None in files from before these columns.
    agent_colour: float | None = None
    object_colour: float | None = None
    background_colour: float | None = None
    agent_size: float | None = None
    lighting: float | None = None
    # How the condition moved the camera: "viewpoint" (the env rendered from a moved MuJoCo camera, with parallax)
    # or "pixel" (the frames were warped: 2-D tasks); None when the condition does not move the camera.
    camera_kind: str | None = None
    # Surprise per impossible event the task declares (tasks/events.py), parallel lists: AUROC at the event
    # frame against clean frames, and the one-sided paired t-test's p against the clean twin (p < 0.01: detected).
    surprise_events: list[str] | None = None
    surprise_auroc_by_event: list[float] | None = None
    surprise_p_by_event: list[float] | None = None


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


@dataclass
class RarityRow:
    """One evaluation case of one trial: how rare it is under that trial's training data, and its rarity bucket.

    ``python -m harness stress rarity RESULTS`` writes them to ``RESULTS/rarity.parquet`` (harness/eval/stress.py);
    the leaderboard joins them to the episode rows on (trial_id, case_seed). Bucket edges are quantiles of the
    task's cases, so a case shared by several trials of one training dataset lands in one bucket for all of them.
    ``surprise`` is the trial's model's mean one-step latent prediction error along the case's recorded frames
    (harness/eval/surprise.py ``case_surprise``); None for reference controllers, under ``--no-surprise``, and in
    files written before the column.
    """

    trial_id: str
    task: str
    protocol_hash: str
    case_seed: int
    start_rarity: float  # mean distance to the k nearest training states, per-dimension standardised
    goal_rarity: float
    rarity: float  # max(start, goal): a case is as rare as its rarer end
    bucket: int  # 0: the task's most common quantile of cases ... buckets - 1: the rarest
    buckets: int
    rarity_k: int  # the k of the k-NN rarity
    surprise: float | None = None  # mean ‖predict(z≤t, a≤t) − encode(frame t+1)‖² from the case's start to its goal


@dataclass
class ReplayRow:
    """One mined failure, replayed and drawn by ``python -m harness replay-failures RESULTS``: RESULTS/replays.parquet.

    ``failure_row`` indexes ``failures/<trial_id>.parquet`` (0 = the hardest case the search found); ``strip`` is the
    image strip's path relative to the results folder.
    """

    trial_id: str
    failure_row: int
    task: str
    model: str
    role: str
    variant: str
    seed: int
    protocol_hash: str
    condition: str
    case_seed: int
    start_rarity: float | None
    goal_rarity: float | None
    recorded_success: bool  # what the search recorded for the case
    recorded_final_distance: float
    success: bool  # what the replay found
    final_distance: float
    strip: str  # e.g. "strips/<trial_id>_0.png"


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
FAILURES_DIR = "failures"  # the adversarial search's failed episodes, one file per trial (harness/eval/stress.py)
STRIPS_DIR = "strips"  # the image strips of replayed failures
RARITY_FILE = "rarity.parquet"  # RarityRow
REPLAYS_FILE = "replays.parquet"  # ReplayRow


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


class ResultsWriteError(OSError):
    """A results file could not be written (a full disk, a read-only folder): nothing was left in its place."""


def write_atomic(table: pa.Table, root: str, relative_path: str) -> str:
    """Write ``table`` to ``root/relative_path`` via a temp file and a rename.

    Raises :class:`ResultsWriteError`, one line naming the file and the reason, when the folder cannot take it;
    the temp file is removed whatever stopped the write, so a failed write leaves the folder as it found it.
    """
    fs, base = _filesystem(root)
    path = f"{base.rstrip('/')}/{relative_path}"
    temp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(table, temp, filesystem=fs)
        fs.move(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # a folder that refuses even this: the first error is the one to report
            if fs.get_file_info(temp).type != pafs.FileType.NotFound:
                fs.delete_file(temp)
        if isinstance(error, OSError):
            raise ResultsWriteError(f"cannot write {path}: {str(error).splitlines()[0]}") from error
        raise
    return path


def write_trial(root: str, trial_id: str, conditions: Sequence[ConditionRow], episodes: Sequence[EpisodeRow]) -> None:
    """Write one trial's episode rows, then its condition rows (the marker of a finished trial); when the condition
    rows cannot be written, the episode rows are removed again, so a failed write leaves none of the trial's rows."""
    episodes_path = write_atomic(to_table(episodes, EpisodeRow), root, f"{EPISODES_DIR}/{trial_id}.parquet")
    try:
        write_atomic(to_table(conditions, ConditionRow), root, f"{TRIALS_DIR}/{trial_id}.parquet")
    except BaseException:
        fs, _ = _filesystem(root)
        with contextlib.suppress(OSError):
            fs.delete_file(episodes_path)
        raise


def trial_done(root: str, trial_id: str) -> bool:
    """Whether a trial's files are all there, readable and agree (then a resumed sweep skips it)."""
    return verify_trial(root, trial_id) is None


def _read_file(fs: pafs.FileSystem, path: str, schema: pa.Schema) -> pd.DataFrame:
    """One Parquet file's rows, read whole with the expected schema; raises if it is missing or damaged."""
    return pq.read_table(path, filesystem=fs, schema=schema).to_pandas()


def _trial_problem(
    trial_id: str, conditions: pd.DataFrame, episodes: pd.DataFrame | None, expect_episodes: bool = True
) -> str | None:
    """Why a trial's condition rows and episode rows do not agree, or None (``expect_episodes`` False: a
    folder written before episode rows existed, judged on its condition rows alone)."""
    if conditions.empty:
        return "its condition file holds no rows"
    if set(conditions["trial_id"]) != {trial_id}:
        return f"its condition rows name trial(s) {sorted(set(conditions['trial_id']))}, not {trial_id}"
    ok = conditions[conditions["status"] == "ok"]
    if ok.empty:
        return None  # a failed trial: one row with its error, and no episodes
    if episodes is None:
        return "its episode file is missing" if expect_episodes else None
    if len(episodes) and set(episodes["trial_id"]) != {trial_id}:
        return f"its episode rows name trial(s) {sorted(set(episodes['trial_id']))}, not {trial_id}"
    counts = episodes.groupby("condition").size()
    for row in ok.itertuples():
        stored = int(counts.get(row.condition, 0))
        if stored != int(row.episodes):
            return f"condition {row.condition!r} reports {row.episodes} episodes but {stored} are stored"
    return None


def _read_trial(
    fs: pafs.FileSystem, base: str, trial_id: str, expect_episodes: bool = True
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, str | None]:
    """(condition rows, episode rows, why they are not a finished trial or None), read whole from their files."""
    conditions_path = f"{base.rstrip('/')}/{TRIALS_DIR}/{trial_id}.parquet"
    episodes_path = f"{base.rstrip('/')}/{EPISODES_DIR}/{trial_id}.parquet"
    if fs.get_file_info(conditions_path).type != pafs.FileType.File:
        return None, None, "not run"
    try:
        conditions = _read_file(fs, conditions_path, CONDITION_SCHEMA)
    except (OSError, pa.ArrowException) as error:
        return None, None, f"{conditions_path} cannot be read ({str(error).splitlines()[0]})"
    episodes = None
    if fs.get_file_info(episodes_path).type == pafs.FileType.File:
        try:
            episodes = _read_file(fs, episodes_path, EPISODE_SCHEMA)
        except (OSError, pa.ArrowException) as error:
            return conditions, None, f"{episodes_path} cannot be read ({str(error).splitlines()[0]})"
    return conditions, episodes, _trial_problem(trial_id, conditions, episodes, expect_episodes)


def verify_trial(root: str, trial_id: str) -> str | None:
    """Why trial ``trial_id`` under ``root`` is not a finished trial (a file missing, unreadable or
    disagreeing with the other), or None when its condition rows and episode rows are whole and agree."""
    fs, base = _filesystem(root)
    *_, problem = _read_trial(fs, base, trial_id)
    return problem if problem in (None, "not run") else f"{trial_id}: {problem}"


@dataclass
class VerifiedResults:
    """A results folder's rows from the trials whose files are whole and agree, and why the others were left out."""

    conditions: pd.DataFrame
    episodes: pd.DataFrame
    left_out: dict[str, str]  # trial id -> what is wrong with its files


def load_verified(root: str) -> VerifiedResults:
    """Every trial's condition and episode rows, verified trial by trial (:func:`verify_trial`'s checks);
    a trial with an unreadable or inconsistent file is left out of both tables and named in ``left_out``."""
    fs, base = _filesystem(root)
    folder = f"{base.rstrip('/')}/{TRIALS_DIR}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no {TRIALS_DIR}/ folder of results under {root!r}")
    names = [info.base_name for info in fs.get_file_info(pafs.FileSelector(folder))]
    trial_ids = sorted(name.removesuffix(".parquet") for name in names if name.endswith(".parquet"))
    has_episodes = fs.get_file_info(f"{base.rstrip('/')}/{EPISODES_DIR}").type == pafs.FileType.Directory
    conditions, episodes, left_out = [], [], {}
    for trial_id in trial_ids:
        trial, stored, problem = _read_trial(fs, base, trial_id, expect_episodes=has_episodes)
        if problem is not None:
            left_out[trial_id] = problem
            continue
        conditions.append(trial)
        if stored is not None:
            episodes.append(stored)
    empty = {name: pd.DataFrame({n: pd.Series(dtype=object) for n in schema.names})
             for name, schema in (("c", CONDITION_SCHEMA), ("e", EPISODE_SCHEMA))}  # fmt: skip
    return VerifiedResults(
        pd.concat(conditions, ignore_index=True) if conditions else empty["c"],
        pd.concat(episodes, ignore_index=True) if episodes else empty["e"],
        left_out,
    )


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


class RowsFileError(ValueError):
    """A results file of typed rows cannot be read as those rows (damaged, or written before its columns)."""


def read_rows(root: str, relative_path: str, row_type: type) -> pd.DataFrame | None:
    """The rows of an optional file of ``row_type`` rows under ``root`` (e.g. :data:`RARITY_FILE`); None when absent.

    A column added later (a field that defaults to None) may be absent from an older file: it reads as nulls.
    Raises :class:`RowsFileError`, one line naming the file, when it is damaged or lacks any other column.
    """
    fs, base = _filesystem(root)
    path = f"{base.rstrip('/')}/{relative_path}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    schema = schema_of(row_type)
    optional = {field.name for field in dataclasses.fields(row_type) if field.default is None}
    try:
        stored = pq.read_schema(path, filesystem=fs).names
        missing = [name for name in schema.names if name not in stored and name not in optional]
        if missing:
            raise RowsFileError(
                f"{path} lacks column(s) {', '.join(missing)} of {row_type.__name__}: written by an older wmbench"
            )
        return _read_file(fs, path, schema)
    except (OSError, pa.ArrowException) as error:
        raise RowsFileError(f"{path} cannot be read ({str(error).splitlines()[0]})") from error
