"""The rare-state study on the board: success by rarity bucket, models compared on rare cases, replayed failures.

Two optional files of a results folder, each written by a stress command, feed it:

- ``rarity.parquet`` (:class:`~harness.report.results.RarityRow`, ``python -m harness stress rarity RESULTS``):
  every trial's cases with their rarity and bucket. Joined to the clean episode rows on (trial, case seed), it
  gives each entry's success per bucket with a Wilson 95% interval and the rarest − most common difference
  (:class:`RarityCurve`). A task's bucket edges are shared by every model (the same cases fall in the same
  bucket), so two models are also compared case for case (:func:`rarity_pairs`). Where the rows carry a world
  model's surprise per case, its curve also holds the mean surprise per bucket and Spearman's ρ of rarity and
  surprise: does the model's prediction error rise on the cases its training data hardly covered?
- ``replays.parquet`` (:class:`~harness.report.results.ReplayRow`, ``python -m harness replay-failures RESULTS``):
  the adversarial search's hardest cases, replayed, and the image strips they were drawn to.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from harness.report import stats
from harness.report.results import (
    CLEAN_AXIS,
    RARITY_FILE,
    REPLAYS_FILE,
    RarityRow,
    ReplayRow,
    RowsFileError,
    read_rows,
)

ENTRY = ["protocol_hash", "task", "model", "variant", "source"]  # build.ENTRY: one entry on one task
TASK = ["source", "protocol_hash", "task"]  # the cases of one task in one folder share their bucket edges
PAIR_COLUMNS = [
    "protocol_hash", "task", "source", "model_x", "variant_x", "model_y", "variant_y",
    "rarest_x", "rarest_y", "rarest_difference", "rarest_ci_low", "rarest_ci_high", "mcnemar_p", "rarest_pairs",
    "gap_difference", "gap_ci_low", "gap_ci_high", "common_pairs",
]  # fmt: skip


@dataclass(frozen=True)
class RarityCurve:
    """Clean success per rarity bucket (most common first) of one entry on one task, and rarest − most common."""

    protocol_hash: str
    task: str
    model: str
    variant: str
    source: str
    role: str
    rarity_k: int  # the k of the k-NN rarity the buckets were cut on
    success: tuple[float, ...]  # per bucket, bucket 0 (the most common cases) first; NaN for an empty bucket
    success_ci_low: tuple[float, ...]  # Wilson 95% over the bucket's seeds × cases
    success_ci_high: tuple[float, ...]
    episodes: tuple[int, ...]  # seeds × cases per bucket
    gap: float  # success on the rarest bucket − on the most common; NaN when either is empty
    gap_ci_low: float  # Newcombe's interval from the two Wilson intervals: unpaired, the buckets hold different cases
    gap_ci_high: float
    # A world model's surprise per case (RarityRow.surprise; none for reference controllers or files without it):
    surprise: tuple[float, ...] = ()  # mean per bucket over seeds × cases, bucket 0 first; NaN where none was scored
    surprise_spearman: float = float("nan")  # Spearman ρ of a case's rarity and its surprise, seeds × cases pooled
    surprise_pairs: int = 0  # the n of that ρ: seeds × cases with a surprise

    @property
    def buckets(self) -> int:
        return len(self.success)


# --------------------------------------------------------------------------- reading the files


def read(sources: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rarity rows, replayed failures, warnings) of every (label, folder); a file that cannot be read is named in
    a warning and left out. Replays carry ``strip_path`` (where the strip is) and ``strip_exists``."""
    rarity, replays, warnings = [], [], []
    for label, folder in sources:
        for name, row_type, frames in ((RARITY_FILE, RarityRow, rarity), (REPLAYS_FILE, ReplayRow, replays)):
            try:
                rows = read_rows(folder, name, row_type)
            except RowsFileError as error:
                command = "stress rarity" if row_type is RarityRow else "replay-failures"
                warnings.append(f"{error}; left off the board (`python -m harness {command} {folder}` rewrites it)")
                continue
            if rows is not None and len(rows):
                frames.append(rows.assign(source=label, folder=folder))
    rarity_rows = pd.concat(rarity, ignore_index=True) if rarity else pd.DataFrame()
    replay_rows = pd.concat(replays, ignore_index=True) if replays else pd.DataFrame()
    if len(replay_rows):
        located = [_strip_location(row.folder, row.strip) for row in replay_rows.itertuples()]
        replay_rows["strip_path"] = [path for path, _ in located]
        replay_rows["strip_exists"] = [exists for _, exists in located]
        replay_rows = replay_rows.sort_values(["protocol_hash", "task", "source", "model", "variant", "seed",
                                               "trial_id", "failure_row"], ignore_index=True)  # fmt: skip
        missing = replay_rows[~replay_rows["strip_exists"]]
        if len(missing):
            warnings.append(
                f"{len(missing)} replayed failure strip(s) are missing ({', '.join(missing['strip_path'])}); "
                "`python -m harness replay-failures RESULTS` draws them again"
            )
    return rarity_rows, replay_rows, warnings


def _strip_location(folder: str, strip: str) -> tuple[str, bool]:
    """(where a strip named relative to its results folder is, whether the file is there)."""
    if "://" in folder and not folder.startswith("file://"):
        fs, base = pafs.FileSystem.from_uri(folder)
        exists = fs.get_file_info(f"{base.rstrip('/')}/{strip}").type == pafs.FileType.File
        return f"{folder.rstrip('/')}/{strip}", exists
    path = Path(folder.removeprefix("file://")) / strip
    return str(path), path.is_file()


# --------------------------------------------------------------------------- statistics


def clean_cases(ok: pd.DataFrame, episodes: pd.DataFrame, rarity: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every clean episode of a trial with rarity rows: its entry, seed, case seed, success, bucket; and warnings
    for trials the rarity file has not seen (run after it)."""
    if rarity.empty or episodes.empty:
        return pd.DataFrame(), []
    clean = ok[ok["axis"] == CLEAN_AXIS][["source", "trial_id", "condition", *ENTRY[:-1], "role", "seed"]]
    clean = clean.drop_duplicates(["source", "trial_id"])
    cases = episodes[["source", "trial_id", "condition", "case_seed", "success"]].merge(
        clean, on=["source", "trial_id", "condition"]
    )
    rarity = rarity if "surprise" in rarity else rarity.assign(surprise=np.nan)
    buckets = rarity[["source", "trial_id", "case_seed", "bucket", "buckets", "rarity", "rarity_k", "surprise"]]
    cases = cases.merge(buckets, on=["source", "trial_id", "case_seed"], how="left")
    warnings = []
    unseen = cases[cases["bucket"].isna() & cases["source"].isin(set(rarity["source"]))]
    if len(unseen):
        trials = sorted(unseen["trial_id"].unique())
        warnings.append(
            f"{len(trials)} trial(s) have no rarity rows, run after `python -m harness stress rarity` "
            f"(run it again to add them): {', '.join(trials)}"
        )
    cases = cases[cases["bucket"].notna()]
    return cases.astype({"bucket": int, "buckets": int, "rarity_k": int, "success": bool, "surprise": float}), warnings


def unshared_tasks(cases: pd.DataFrame) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(source, protocol, task) whose cases fall in different buckets for different trials (they trained on
    different data, so their rarity differs): no paired comparison there; and a warning naming them."""
    if cases.empty:
        return set(), []
    spread = cases.groupby([*TASK, "case_seed"])[["bucket", "buckets"]].nunique().max(axis=1)
    unshared = {key[:3] for key, count in spread.items() if count > 1}
    if not unshared:
        return set(), []
    named = ", ".join(f"{task} [{protocol}]" for _, protocol, task in sorted(unshared))
    return unshared, [
        f"rarity buckets are not shared by every trial on {named} (trials trained on different data): "
        "success by rarity is shown per entry, but no model is compared with another on the same rare cases there"
    ]


def rarity_curves(table: pd.DataFrame, cases: pd.DataFrame) -> list[RarityCurve]:
    """One curve per entry with rarity rows, in the condition table's entry order (ceiling first, floor last)."""
    if cases.empty:
        return []
    by_entry = dict(iter(cases.groupby(ENTRY, sort=False)))
    curves = []
    for key, rows in table.groupby(ENTRY, sort=False):
        mine = by_entry.get(key)
        if mine is None:
            continue
        buckets = int(mine["buckets"].max())
        success, low, high, episodes = [], [], [], []
        for bucket in range(buckets):
            outcomes = mine.loc[mine["bucket"] == bucket, "success"]
            interval = stats.wilson_interval(int(outcomes.sum()), len(outcomes))
            success.append(interval.estimate)
            low.append(interval.low)
            high.append(interval.high)
            episodes.append(len(outcomes))
        scored = mine[mine["surprise"].notna()]
        surprise = [scored.loc[scored["bucket"] == bucket, "surprise"] for bucket in range(buckets)]
        rarest, most_common = (mine.loc[mine["bucket"] == bucket, "success"] for bucket in (buckets - 1, 0))
        gap = stats.newcombe_difference(int(rarest.sum()), len(rarest), int(most_common.sum()), len(most_common))
        curves.append(
            RarityCurve(
                **dict(zip(ENTRY, key, strict=True)),
                role=rows["role"].iloc[0],
                rarity_k=int(mine["rarity_k"].iloc[0]),
                success=tuple(success),
                success_ci_low=tuple(low),
                success_ci_high=tuple(high),
                episodes=tuple(episodes),
                gap=gap.estimate,
                gap_ci_low=gap.low,
                gap_ci_high=gap.high,
                surprise=tuple(float(values.mean()) if len(values) else np.nan for values in surprise),
                surprise_spearman=stats.rank_correlation(scored["rarity"], scored["surprise"]),
                surprise_pairs=len(scored),
            )  # fmt: skip
        )
    return curves


def rarity_pairs(curves: list[RarityCurve], cases: pd.DataFrame, unshared: set[tuple[str, str, str]]) -> pd.DataFrame:
    """Every pair of world models (role ``model``) on one task of one folder, on the cases both ran (same seed, same
    case seed, so the same bucket): X − Y on the rarest bucket (paired bootstrap CI, exact McNemar p), and the
    difference of their rarest − most common gaps, from the per-case differences X − Y (a bootstrap of those
    differences over the two buckets' cases). Seeds × cases are pooled, as in each bucket's Wilson interval."""
    records = []
    by_task: dict[tuple[str, str, str], list[RarityCurve]] = {}
    for curve in curves:
        if curve.role == "model" and (curve.source, curve.protocol_hash, curve.task) not in unshared:
            by_task.setdefault((curve.source, curve.protocol_hash, curve.task), []).append(curve)
    for models in by_task.values():
        for x, y in itertools.combinations(models, 2):
            record = _pair(cases, x, y)
            if record is not None:
                records.append(record)
    return pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)


def _entry_cases(cases: pd.DataFrame, curve: RarityCurve) -> pd.DataFrame:
    mask = np.logical_and.reduce([cases[column] == getattr(curve, column) for column in ENTRY])
    return cases.loc[mask, ["seed", "case_seed", "bucket", "success"]]


def _pair(cases: pd.DataFrame, x: RarityCurve, y: RarityCurve) -> dict[str, object] | None:
    joined = _entry_cases(cases, x).merge(
        _entry_cases(cases, y), on=["seed", "case_seed", "bucket"], suffixes=("_x", "_y")
    )
    rarest, most_common = x.buckets - 1, 0
    rare, common = joined[joined["bucket"] == rarest], joined[joined["bucket"] == most_common]
    if rare.empty:
        return None
    # Seeds × cases pooled, as in the Wilson intervals of each bucket, so every estimate is a difference of them.
    comparison = stats.paired_comparison([rare["success_y"].to_numpy()], [rare["success_x"].to_numpy()])  # X − Y
    interval, gap = comparison.difference, stats.Interval(np.nan, np.nan, np.nan)
    if len(common):
        difference = joined["success_x"].astype(float) - joined["success_y"].astype(float)  # per case, in {-1, 0, 1}
        rare_difference, common_difference = (difference[joined["bucket"] == b] for b in (rarest, most_common))
        gap = stats.unpaired_difference_ci([rare_difference.to_numpy()], [common_difference.to_numpy()])
    return {
        "protocol_hash": x.protocol_hash, "task": x.task, "source": x.source,
        "model_x": x.model, "variant_x": x.variant, "model_y": y.model, "variant_y": y.variant,
        "rarest_x": float(rare["success_x"].mean()), "rarest_y": float(rare["success_y"].mean()),
        "rarest_difference": interval.estimate, "rarest_ci_low": interval.low, "rarest_ci_high": interval.high,
        "mcnemar_p": comparison.mcnemar_p, "rarest_pairs": comparison.pairs,
        "gap_difference": gap.estimate, "gap_ci_low": gap.low, "gap_ci_high": gap.high, "common_pairs": len(common),
    }  # fmt: skip
