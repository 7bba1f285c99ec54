"""Parquet results: one file of condition rows and one of episode rows per trial.

Files are written atomically (temp file + rename) so a killed trial never leaves a
half-written result. Columns grow; they are never silently renamed. ``root`` may be
a local folder or any pyarrow filesystem URI (``file:///...``, ``s3://...``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# One row per (trial, evaluation condition). DESIGN.md "Results".
CONDITION_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("status", pa.string()),  # "ok" | "failed"
        ("error", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("variant", pa.string()),  # what sets this entry apart from others of its model in the sweep
        ("seed", pa.int64()),
        ("config", pa.string()),  # the trial's resolved config as JSON
        ("condition", pa.string()),  # e.g. "clean", "action_noise=0.2", "camera_shift=4"
        ("action_noise", pa.float64()),
        ("camera_shift", pa.float64()),
        ("camera_rotate", pa.float64()),
        ("camera_zoom", pa.float64()),
        ("sticky_prob", pa.float64()),
        ("brightness", pa.float64()),
        ("hue", pa.float64()),
        ("episodes", pa.int64()),
        ("success_rate", pa.float64()),
        ("success_ci_low", pa.float64()),  # Wilson 95% interval of success_rate
        ("success_ci_high", pa.float64()),
        ("final_distance", pa.float64()),
        ("plan_ms_median", pa.float64()),
        ("plan_ms_p95", pa.float64()),
        ("tokens_per_frame", pa.int64()),
        ("num_params", pa.int64()),
        ("train_steps", pa.int64()),
        ("train_seconds", pa.float64()),
        ("samples_per_s", pa.float64()),
        ("first_loss", pa.float64()),
        ("final_loss", pa.float64()),
        ("latent_eff_rank", pa.float64()),
        ("sigreg_stat", pa.float64()),
        ("probe_r2", pa.float64()),
        ("surprise_auroc", pa.float64()),
        ("solved_starts_resampled", pa.int64()),
        ("protocol", pa.string()),  # resolved protocol as JSON
        ("protocol_hash", pa.string()),
        ("dataset_key", pa.string()),
        ("data_policy", pa.string()),  # how the training data was collected, e.g. "expert(noise=0.3)"
        ("data_policy_success", pa.float64()),  # that policy's measured success rate on its own goals
        ("case_split", pa.string()),  # "heldout" | "train": where the evaluation cases came from
        ("encoder", pa.string()),  # model.describe(): which weights the encoder has
        ("node", pa.string()),
        ("device", pa.string()),
        ("peak_mem_mb", pa.float64()),
        ("git_sha", pa.string()),
        ("versions", pa.string()),  # JSON: package -> version
        ("packages_hash", pa.string()),  # hash of the whole installed package set
        ("command", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)

# One row per evaluation episode; condition rows are aggregates of these.
EPISODE_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("condition", pa.string()),
        ("episode", pa.int64()),
        ("case_seed", pa.int64()),
        ("start", pa.list_(pa.float64())),
        ("goal", pa.list_(pa.float64())),
        ("success", pa.bool_()),
        ("final_distance", pa.float64()),
        ("steps", pa.int64()),
        ("plan_ms", pa.float64()),  # median replanning wall-clock within the episode
        ("start_solved", pa.bool_()),
        ("protocol_hash", pa.string()),
    ]
)

TRIALS_DIR = "trials"
EPISODES_DIR = "episodes"


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local folder or a pyarrow filesystem URI."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(root)


def _table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    unknown = {key for row in rows for key in row} - set(schema.names)
    if unknown:
        raise KeyError(f"result rows have columns not in the schema: {sorted(unknown)}")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
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


def write_trial(
    root: str, trial_id: str, conditions: Sequence[dict[str, Any]], episodes: Sequence[dict[str, Any]]
) -> None:
    """Write one trial's episode rows, then its condition rows (the marker of a finished trial)."""
    write_atomic(_table(episodes, EPISODE_SCHEMA), root, f"{EPISODES_DIR}/{trial_id}.parquet")
    write_atomic(_table(conditions, CONDITION_SCHEMA), root, f"{TRIALS_DIR}/{trial_id}.parquet")


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
