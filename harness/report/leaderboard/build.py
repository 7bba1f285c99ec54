"""Read a sweep's rows back into a :class:`Leaderboard`: statistics with intervals, never bare means.

Rows are grouped by protocol × task × entry × condition, where an entry is a (model, variant,
source) triple and carries its row's ``role`` (a world model, or the floor or ceiling controller). Each
success rate carries a stratified bootstrap CI over seeds and episodes; each perturbed condition
is compared with the clean condition of the same trial on the same cases (paired on case_seed);
every perturbation axis gets a curve of success vs magnitude that starts at the clean condition
and its normalised AUC; entries are summarised across tasks by the interquartile mean and
compared per task by the probability of improvement (rliable). Failed trials are counted and
listed with their error. Several results folders share one board where their protocol and cases
agree (merge.py); ``source`` names each row's folder ("" when the board reads one). A folder's
``rarity.parquet`` and ``replays.parquet`` (the stress commands') add success by rarity bucket and
the replayed failures (rarity.py).

Rows say what they are in their ``role``, ``variant``, ``axis`` and ``magnitude`` columns;
nothing is parsed out of a name. Result folders written before those columns existed read
with every row a model and no axis (no clean condition, no curves): re-run them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import harness.report.leaderboard.rarity as rare_states
from harness.report import stats
from harness.report.leaderboard.merge import (
    UNKNOWN_CASES,
    Refusal,
    Source,
    folder_labels,
    merge,
    source_of,
    within_folder_warnings,
)
from harness.report.results import (
    CLEAN_AXIS,
    COMBINED_AXIS,
    CONDITION_SCHEMA,
    load_verified,
)

GROUP = ["protocol_hash", "task", "model", "variant", "source", "condition"]  # one row of the condition table
ENTRY = ["protocol_hash", "task", "model", "variant", "source"]  # one entry on one task: one line of a curve
WIDE_CI_HALF_WIDTH = 0.10  # warn when a success CI is wider than ±10 points: too few episodes or seeds to rank on
UNKNOWN_PROTOCOL = "unknown"
ALL_FAILED = "(all trials failed)"  # the condition of the placeholder row of an entry whose every trial failed


class NoResultsError(FileNotFoundError):
    """The results folder is missing or holds no condition rows."""


@dataclass(frozen=True)
class Curve:
    """Success vs one axis's magnitude for one entry on one task, from the clean condition at the unperturbed value."""

    protocol_hash: str
    task: str
    model: str
    variant: str
    source: str  # the results folder's label ("" on a board of one folder)
    role: str
    axis: str
    clean_magnitude: float | None  # the axis's unperturbed value, read from the clean row (None: no clean row)
    magnitudes: tuple[float, ...]  # ascending, the clean condition's among them
    success: tuple[float, ...]  # at each magnitude
    success_ci_low: tuple[float, ...]
    success_ci_high: tuple[float, ...]
    auc: float  # stats.normalised_auc: mean success over the magnitude range; NaN with fewer than two points
    camera_kind: str | None = None  # a camera axis: "viewpoint" (a moved MuJoCo camera) or "pixel" (frames warped)


@dataclass
class Leaderboard:
    """Everything the tables and plots show; every table is keyed by (model, variant) and carries ``role``."""

    conditions: pd.DataFrame  # one row per protocol × task × model × variant × condition (GROUP)
    models: pd.DataFrame  # IQM of clean success across tasks, per protocol × model × variant
    improvement: pd.DataFrame  # P(X > Y) per protocol × task × pair of entries, clean condition
    failed: pd.DataFrame  # one row per failed trial, with its error
    probes: pd.DataFrame  # linear-probe Pearson r and R² per protocol × task × entry × named quantity, held-out
    curves: list[Curve]  # one per protocol × task × entry × perturbation axis, in table order
    axes: list[str]  # the perturbation axes present, in ConditionRow's column order
    protocols: dict[str, dict[str, Any]]  # protocol_hash -> resolved protocol
    root: str  # the first (founding) results folder
    baseline: str | None = None
    warnings: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # trial id -> why its files were not used
    sources: list[Source] = field(default_factory=list)  # every folder read, the first founding the board
    refused: list[Refusal] = field(default_factory=list)  # rows of later folders that could not join, and why
    # The rare-state study (rarity.py), from each folder's rarity.parquet and replays.parquet where present.
    rarity: list[rare_states.RarityCurve] = field(default_factory=list)  # clean success per rarity bucket per entry
    rarity_pairs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=rare_states.PAIR_COLUMNS))
    replays: pd.DataFrame = field(default_factory=pd.DataFrame)  # ReplayRow columns + source, strip_path, strip_exists


def label(model: str, variant: str, role: str, source: str = "") -> str:
    """An entry's display name, e.g. ``random (floor) · planner.name=mppi [quickstart]``; for display only."""
    name = {"floor": f"{model} (floor)", "ceiling": f"{model} (ceiling)"}.get(role, model)
    name = f"{name} · {variant}" if variant else name
    return f"{name} [{source}]" if source else name


# --------------------------------------------------------------------------- reading rows


@dataclass
class _TrialOutcomes:
    """One trial's episode outcomes under one condition, in case_seed order."""

    source: str
    trial_id: str
    seed: int
    success: np.ndarray  # (episodes,) bool
    case_seeds: np.ndarray | None  # (episodes,) int; None when rebuilt from a condition row alone
    plan_ms: np.ndarray  # (episodes,) float, may be empty
    final_distance: np.ndarray  # (episodes,) float, may be empty


def _read(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """(condition rows, episode rows, trials left out and why) under ``root``, verified trial by trial:
    a trial whose files are unreadable or disagree is left out of every statistic. A missing or empty
    folder raises NoResultsError."""
    try:
        verified = load_verified(str(root))
    except FileNotFoundError as error:
        raise NoResultsError(
            f"no results under {root}: expected trials/*.parquet written by harness.sweep.cli"
        ) from error
    conditions, episodes = verified.conditions, verified.episodes
    if conditions.empty and not verified.left_out:
        raise NoResultsError(f"no results under {root}: its trials/ folder holds no rows")
    conditions = conditions.assign(
        protocol_hash=conditions["protocol_hash"].fillna(UNKNOWN_PROTOCOL),
        variant=conditions["variant"].fillna(""),
        role=conditions["role"].fillna("model"),  # rows written before roles: re-run to get the floor and ceiling
        case_fingerprint=conditions["case_fingerprint"].fillna(UNKNOWN_CASES),  # rows before fingerprints
    )
    return conditions, episodes, verified.left_out


def _read_all(roots: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str], list[Source], list[Refusal]]:
    """:func:`_read` of each folder, merged where protocol and cases agree (merge.py): (condition rows, episode
    rows, trials left out, the folders, the refusals); a trial id is named with its folder when several are read."""
    read, left_out = [], {}
    for label_, root in zip(folder_labels(roots), roots, strict=True):
        conditions, episodes, lost = _read(root)
        read.append((source_of(label_, root, conditions), conditions, episodes))
        left_out |= {f"{label_}/{trial}" if label_ else trial: why for trial, why in lost.items()}
    conditions, episodes, refused = merge(read)
    return conditions, episodes, left_out, [source for source, *_ in read], refused


def _episode_index(episodes: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(source, trial_id, condition) -> that trial's episodes under that condition, sorted by case_seed."""
    if episodes.empty:
        return {}
    ordered = episodes.sort_values(["source", "trial_id", "condition", "case_seed", "episode"])
    return {key: frame for key, frame in ordered.groupby(["source", "trial_id", "condition"], sort=False)}


def _outcomes(row: pd.Series, index: dict[tuple[str, str, str], pd.DataFrame]) -> _TrialOutcomes | None:
    """The episodes behind a condition row; rebuilt as k successes of n when only the row exists."""
    frame = index.get((row["source"], row["trial_id"], row["condition"]))
    seed = int(row["seed"]) if pd.notna(row["seed"]) else -1
    if frame is not None and len(frame):
        return _TrialOutcomes(
            source=row["source"],
            trial_id=row["trial_id"],
            seed=seed,
            success=frame["success"].to_numpy(dtype=bool),
            case_seeds=frame["case_seed"].to_numpy(dtype=np.int64),
            plan_ms=frame["plan_ms"].dropna().to_numpy(dtype=float),
            final_distance=frame["final_distance"].dropna().to_numpy(dtype=float),
        )
    if pd.isna(row["success_rate"]) or pd.isna(row["episodes"]) or row["episodes"] <= 0:
        return None
    n = int(row["episodes"])
    k = int(round(row["success_rate"] * n))
    return _TrialOutcomes(row["source"], row["trial_id"], seed, np.arange(n) < k, None, np.array([]), np.array([]))


def _axes(conditions: pd.DataFrame) -> list[str]:
    """The single-field perturbation axes present, in ConditionRow's column order (unknown names after, sorted)."""
    present = set(conditions["axis"].dropna()) - {CLEAN_AXIS, COMBINED_AXIS}
    columns = CONDITION_SCHEMA.names
    return sorted(present, key=lambda axis: (columns.index(axis) if axis in columns else len(columns), axis))


def _protocols(conditions: pd.DataFrame) -> dict[str, dict[str, Any]]:
    protocols: dict[str, dict[str, Any]] = {}
    rows = (
        conditions[["protocol_hash", "protocol"]].dropna().drop_duplicates("protocol_hash").sort_values("protocol_hash")
    )
    for key, text in rows.itertuples(index=False):
        try:
            protocols[key] = json.loads(text) if isinstance(text, str) else {}
        except json.JSONDecodeError:
            protocols[key] = {}
    return protocols


# --------------------------------------------------------------------------- statistics per group


def _pair_on_case_seed(reference: _TrialOutcomes, treatment: _TrialOutcomes) -> tuple[np.ndarray, np.ndarray] | None:
    """The two trials' outcomes on the cases both ran, aligned by case_seed; None without case seeds."""
    if reference.case_seeds is None or treatment.case_seeds is None:
        return None
    common, ref_at, treat_at = np.intersect1d(reference.case_seeds, treatment.case_seeds, return_indices=True)
    if not common.size:
        return None
    return reference.success[ref_at], treatment.success[treat_at]


def _condition_stats(
    rows: pd.DataFrame, trials: list[_TrialOutcomes], clean_of_trial: dict[str, _TrialOutcomes]
) -> dict[str, Any]:
    """Success with its CIs, the paired difference from clean, plan time and tokens for one group's trials."""
    result: dict[str, Any] = {"seeds": len(trials), "episodes": int(sum(t.success.size for t in trials))}
    if not trials:
        return result
    success = stats.stratified_bootstrap_ci([t.success for t in trials])
    wilson = stats.wilson_interval(int(sum(t.success.sum() for t in trials)), result["episodes"])
    plan_ms = np.concatenate([t.plan_ms for t in trials])
    distances = np.concatenate([t.final_distance for t in trials])
    result.update(
        success=success.estimate,
        success_ci_low=success.low,
        success_ci_high=success.high,
        success_half_width=success.half_width,
        wilson_low=wilson.low,
        wilson_high=wilson.high,
        plan_ms_median=float(np.median(plan_ms)) if plan_ms.size else float(rows["plan_ms_median"].median()),
        final_distance=float(distances.mean()) if distances.size else float(rows["final_distance"].mean()),
        tokens_per_frame=rows["tokens_per_frame"].dropna().max(),
        surprise_auroc=float(rows["surprise_auroc"].mean()) if rows["surprise_auroc"].notna().any() else np.nan,
    )
    pairs = [
        pair
        for t in trials
        if (t.source, t.trial_id) in clean_of_trial and clean_of_trial[t.source, t.trial_id] is not t
        if (pair := _pair_on_case_seed(clean_of_trial[t.source, t.trial_id], t)) is not None
    ]
    if pairs:
        paired = stats.paired_comparison([clean for clean, _ in pairs], [perturbed for _, perturbed in pairs])
        result.update(
            delta_vs_clean=paired.difference.estimate,
            delta_ci_low=paired.difference.low,
            delta_ci_high=paired.difference.high,
            pairs=paired.pairs,
            clean_only=paired.reference_only,
            perturbed_only=paired.treatment_only,
            mcnemar_p=paired.mcnemar_p,
        )
    return result


def _group_outcomes(ok: pd.DataFrame, index: dict) -> dict[tuple, list[_TrialOutcomes]]:
    """GROUP key -> the outcomes of each trial in that group."""
    return {
        key: [o for _, row in rows.iterrows() if (o := _outcomes(row, index)) is not None]
        for key, rows in ok.groupby(GROUP, sort=False)
    }


# Columns every condition table has, even when no group produced a value for them.
_STAT_COLUMNS = [
    "seeds",
    "episodes",
    "success",
    "success_ci_low",
    "success_ci_high",
    "success_half_width",
    "delta_vs_clean",
    "delta_ci_low",
    "delta_ci_high",
    "mcnemar_p",
    "plan_ms_median",
    "tokens_per_frame",
    "surprise_auroc",
]


def _condition_table(ok: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]], axes: list[str]) -> pd.DataFrame:
    """One row of statistics per GROUP of the successful trials, with its role, axis, magnitude and axis columns."""
    clean_of_trial = {
        (t.source, t.trial_id): t
        for key, rows in ok[ok["axis"] == CLEAN_AXIS].groupby(GROUP, sort=False)
        for t in outcomes[key]
    }
    axis_columns = [axis for axis in axes if axis in ok.columns]  # each axis is a ConditionRow field, so a column
    described = ["role", "axis", "magnitude", *axis_columns]  # what the condition is; the same on every row of a group
    described += ["camera_kind"] if "camera_kind" in ok.columns else []  # absent from files written before it
    records = []
    for key, rows in ok.groupby(GROUP, sort=False):
        record = dict(zip(GROUP, key, strict=True))
        record.update({column: rows[column].iloc[0] for column in described})
        record.update(_condition_stats(rows, outcomes[key], clean_of_trial))
        records.append(record)
    table = pd.DataFrame.from_records(records, columns=[*GROUP, *described] if not records else None)
    return table.reindex(columns=list(dict.fromkeys([*table.columns, *_STAT_COLUMNS])))


def _failed_trials(conditions: pd.DataFrame) -> pd.DataFrame:
    failed = conditions[conditions["status"] == "failed"]
    columns = ["protocol_hash", "task", "model", "variant", "source", "role", "seed", "trial_id", "condition", "error"]
    if failed.empty:
        return pd.DataFrame(columns=columns)
    first = failed.sort_values("condition", na_position="first").drop_duplicates(["source", "trial_id"])
    first = first.assign(error=first["error"].fillna("(no error recorded)"))
    order = ["protocol_hash", "task", "model", "variant", "source", "seed"]
    return first[columns].sort_values(order).reset_index(drop=True)


def _add_failures(table: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """Count failed trials per task × entry, and give a row to each task × entry whose every trial failed."""
    known = failed[failed["protocol_hash"] != UNKNOWN_PROTOCOL]
    counts = known.groupby(ENTRY).agg(failed_trials=("trial_id", "size"), role=("role", "first")).reset_index()
    missing = counts.merge(table[ENTRY].drop_duplicates(), how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"][[*ENTRY, "role"]]
    placeholders = missing.assign(condition=ALL_FAILED, axis=None, magnitude=np.nan, seeds=0)
    table = pd.concat([table, placeholders], ignore_index=True) if len(placeholders) else table
    table = table.merge(counts[[*ENTRY, "failed_trials"]], on=ENTRY, how="left")
    return table.assign(
        failed_trials=table["failed_trials"].fillna(0).astype(int),
        seeds=table["seeds"].fillna(0).astype(int),
        episodes=table["episodes"].fillna(0).astype(int),
    )


def _curves(table: pd.DataFrame, axes: list[str]) -> list[Curve]:
    """Success vs magnitude per entry, task and axis: clean at the axis's unperturbed value, then that axis's rows."""
    curves = []
    for key, rows in table.groupby(ENTRY, sort=False):
        measured = rows[rows["success"].notna()]
        clean = measured[measured["axis"] == CLEAN_AXIS]
        for axis in axes:
            perturbed = measured[(measured["axis"] == axis) & measured["magnitude"].notna()]
            if perturbed.empty:
                continue
            start = clean.iloc[0].get(axis, np.nan) if len(clean) else np.nan  # the axis's unperturbed value
            points = pd.concat([clean.iloc[:1].assign(magnitude=start), perturbed]) if pd.notna(start) else perturbed
            points = points.sort_values("magnitude", kind="stable")
            kinds = perturbed["camera_kind"].dropna() if "camera_kind" in perturbed.columns else pd.Series()
            curves.append(
                Curve(
                    **dict(zip(ENTRY, key, strict=True)),
                    role=rows["role"].iloc[0],
                    axis=axis,
                    clean_magnitude=float(start) if pd.notna(start) else None,
                    magnitudes=tuple(points["magnitude"].astype(float)),
                    success=tuple(points["success"].astype(float)),
                    success_ci_low=tuple(points["success_ci_low"].astype(float)),
                    success_ci_high=tuple(points["success_ci_high"].astype(float)),
                    auc=stats.normalised_auc(points["magnitude"], points["success"]),
                    camera_kind=str(kinds.iloc[0]) if len(kinds) else None,
                )
            )
    return curves


def _entry_order(table: pd.DataFrame) -> pd.Series:
    """Within a task: the ceiling first, entries by clean success, the floor last."""
    clean = table[table["axis"] == CLEAN_AXIS].set_index(ENTRY)["success"]
    keys = list(table[ENTRY].itertuples(index=False, name=None))
    order = [-(clean.get(key, np.nan) if pd.notna(clean.get(key, np.nan)) else -1.0) for key in keys]
    pinned = table["role"].map({"ceiling": -10.0, "floor": 10.0}).fillna(0.0)
    return pinned + pd.Series(order, index=table.index)


def _axis_order(table: pd.DataFrame, axes: list[str]) -> pd.Series:
    """Clean first, then each axis in ``axes`` order, then combined perturbations, then rows without an axis."""
    rank = {CLEAN_AXIS: 0, **{axis: i + 1 for i, axis in enumerate(axes)}, COMBINED_AXIS: len(axes) + 1}
    return table["axis"].map(rank).fillna(len(axes) + 2)


def _baseline_comparison(
    table: pd.DataFrame,
    current: dict[tuple, list[_TrialOutcomes]],
    baseline: dict[tuple, list[_TrialOutcomes]],
) -> pd.DataFrame:
    """Success of this run minus the baseline's per group: paired on (seed, case_seed) where both ran the same cases.
    Every folder of a merged board is compared with the baseline folder's same group."""
    at = GROUP.index("source")
    before_of = {key[:at] + key[at + 1 :]: trials for key, trials in baseline.items()}
    records = []
    for key in table.set_index(GROUP).index:
        now, before = current.get(key, []), before_of.get(key[:at] + key[at + 1 :], [])
        if not now or not before:
            continue
        record: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        record["baseline_success"] = float(np.mean([t.success.mean() for t in before]))
        paired = _paired_across_runs(before, now)
        if paired is not None:
            comparison = stats.paired_comparison(*paired)
            interval = comparison.difference
            record.update(vs_baseline_paired=True, vs_baseline_p=comparison.mcnemar_p)
        else:
            interval = stats.unpaired_difference_ci([t.success for t in now], [t.success for t in before])
            record.update(vs_baseline_paired=False, vs_baseline_p=np.nan)
        record.update(vs_baseline=interval.estimate, vs_baseline_low=interval.low, vs_baseline_high=interval.high)
        record["regression"] = bool(interval.high < 0)
        record["improvement_vs_baseline"] = bool(interval.low > 0)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _paired_across_runs(
    before: list[_TrialOutcomes], now: list[_TrialOutcomes]
) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Outcomes of the two runs per seed, aligned by case_seed, when both ran exactly the same (seed, case) set."""
    by_seed_before = {t.seed: t for t in before}
    by_seed_now = {t.seed: t for t in now}
    if set(by_seed_before) != set(by_seed_now) or len(by_seed_before) != len(before) or len(by_seed_now) != len(now):
        return None
    reference, treatment = [], []
    for seed in sorted(by_seed_now):
        old, new = by_seed_before[seed], by_seed_now[seed]
        if old.case_seeds is None or new.case_seeds is None or not np.array_equal(old.case_seeds, new.case_seeds):
            return None
        reference.append(old.success)
        treatment.append(new.success)
    return reference, treatment


def _model_summaries(table: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]]) -> pd.DataFrame:
    """IQM of clean per-seed success across tasks, per protocol × entry, with a task-stratified CI."""
    clean = table[(table["axis"] == CLEAN_AXIS) & (table["seeds"] > 0)]
    records = []
    for (protocol, model, variant, source), rows in clean.groupby(
        ["protocol_hash", "model", "variant", "source"], sort=False
    ):
        by_task = [[t.success for t in outcomes[tuple(row[GROUP])]] for _, row in rows.iterrows()]
        interval = stats.iqm_bootstrap_ci(by_task)
        records.append(
            {
                "protocol_hash": protocol,
                "model": model,
                "variant": variant,
                "source": source,
                "role": rows["role"].iloc[0],
                "iqm": interval.estimate,
                "iqm_ci_low": interval.low,
                "iqm_ci_high": interval.high,
                "tasks": ", ".join(sorted(rows["task"])),
                "runs": int(rows["seeds"].sum()),
            }
        )
    columns = ["protocol_hash", "model", "variant", "source", "role", "iqm", "iqm_ci_low", "iqm_ci_high"]
    columns += ["tasks", "runs"]
    models = pd.DataFrame.from_records(records, columns=columns)
    return models.sort_values(["protocol_hash", "iqm"], ascending=[True, False]).reset_index(drop=True)


_SIDE = ("model", "variant", "role", "source")  # what names an entry in a pair of the improvement table


def _improvement(table: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]]) -> pd.DataFrame:
    """P(X > Y) between every pair of entries per protocol × task, over per-seed clean success rates."""
    clean = table[(table["axis"] == CLEAN_AXIS) & (table["seeds"] > 0)]
    records = []
    for (protocol, task), rows in clean.groupby(["protocol_hash", "task"], sort=False):
        entries = list(rows[list(_SIDE)].itertuples(index=False, name=None))
        runs = [[t.success.mean() for t in outcomes[tuple(row[GROUP])]] for _, row in rows.iterrows()]
        for (x, runs_x), (y, runs_y) in itertools.combinations(zip(entries, runs, strict=True), 2):
            records.append(
                {
                    "protocol_hash": protocol,
                    "task": task,
                    **{f"{column}_x": value for column, value in zip(_SIDE, x, strict=True)},
                    **{f"{column}_y": value for column, value in zip(_SIDE, y, strict=True)},
                    "p_x_better": stats.probability_of_improvement(runs_x, runs_y),
                    "runs_x": len(runs_x),
                    "runs_y": len(runs_y),
                }
            )
    sides = [f"{column}_{side}" for side in "xy" for column in _SIDE]
    columns = ["protocol_hash", "task", *sides, "p_x_better", "runs_x", "runs_y"]
    return pd.DataFrame.from_records(records, columns=columns)


PROBE_COLUMNS = ["protocol_hash", "task", "model", "variant", "source", "quantity", "pearson_r", "r2", "seeds"]


def _probes(ok: pd.DataFrame) -> pd.DataFrame:
    """Mean probe Pearson r and R² over seeds per protocol × task × entry × quantity (one clean row per trial)."""
    if "probe_quantities" not in ok.columns:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    clean = ok[(ok["axis"] == CLEAN_AXIS) & ok["probe_quantities"].notna()].drop_duplicates(["source", "trial_id"])
    records = [
        {"protocol_hash": row.protocol_hash, "task": row.task, "model": row.model, "variant": row.variant,
         "source": row.source, "quantity": quantity, "pearson_r": float(r), "r2": float(r2)}
        for row in clean.itertuples()
        for quantity, r, r2 in zip(row.probe_quantities, row.probe_pearson_r, row.probe_r2_by_quantity, strict=True)
    ]  # fmt: skip
    if not records:
        return pd.DataFrame(columns=PROBE_COLUMNS)
    keys = PROBE_COLUMNS[:6]
    table = pd.DataFrame.from_records(records).groupby(keys, sort=False)
    means = table[["pearson_r", "r2"]].mean().join(table.size().rename("seeds")).reset_index()
    return means[PROBE_COLUMNS].sort_values(keys[:5], kind="stable").reset_index(drop=True)


def _left_out_warnings(left_out: dict[str, str], root: str | Path) -> list[str]:
    if not left_out:
        return []
    named = "; ".join(f"{trial}: {why}" for trial, why in left_out.items())
    return [
        f"{len(left_out)} trial(s) under {root} left out of every statistic, their files unreadable or "
        f"inconsistent (`--resume` runs them again): {named}"
    ]


def _warnings(table: pd.DataFrame, conditions: pd.DataFrame, failed: pd.DataFrame, root: str | Path) -> list[str]:
    """What a reader must know before ranking: wide intervals, failed trials, rows too old to carry an axis."""
    warnings = []
    wide = [
        f"{row.task}/{label(row.model, row.variant, row.role)}/{row.condition} [{row.protocol_hash}] "
        f"±{100 * row.success_half_width:.1f} pp"
        for row in table[table["wide_ci"]].itertuples()
    ]
    if wide:
        warnings.append(
            f"{len(wide)} success CI(s) exceed ±{100 * WIDE_CI_HALF_WIDTH:.0f} pp; "
            f"add episodes or seeds before ranking on them: {'; '.join(wide)}"
        )
    if len(failed):
        warnings.append(f"{len(failed)} failed trial(s) under {root}; listed with their errors in the leaderboard")
    unlabelled = conditions[(conditions["status"] != "failed") & conditions["axis"].isna()]
    if len(unlabelled):
        warnings.append(
            f"{unlabelled['trial_id'].nunique()} trial(s) under {root} were written before rows carried "
            "role and axis: they show no clean condition, curve or floor; re-run them"
        )
    return warnings


def build(roots: str | Path | Sequence[str | Path], baseline: str | Path | None = None) -> Leaderboard:
    """Read a results folder, or several (merged where protocol and cases agree: merge.py), and optionally a
    baseline folder, into every table and curve the leaderboard shows."""
    folders = [str(roots)] if isinstance(roots, str | Path) else [str(root) for root in roots]
    if not folders:
        raise NoResultsError("no results folder given")
    conditions, episodes, left_out, sources, refused = _read_all(folders)
    where = ", ".join(folders)
    ok = conditions[conditions["status"] != "failed"]
    outcomes = _group_outcomes(ok, _episode_index(episodes))
    failed = _failed_trials(conditions)
    axes = _axes(ok)

    table = _add_failures(_condition_table(ok, outcomes, axes), failed)
    table["wide_ci"] = table["success_half_width"] > WIDE_CI_HALF_WIDTH
    if baseline is not None:
        base_conditions, base_episodes, _ = _read(baseline)
        base_conditions, base_episodes = base_conditions.assign(source=""), base_episodes.assign(source="")
        base_ok = base_conditions[base_conditions["status"] != "failed"]
        comparison = _baseline_comparison(table, outcomes, _group_outcomes(base_ok, _episode_index(base_episodes)))
        table = table.merge(comparison, on=GROUP, how="left") if len(comparison) else table
        table["regression"] = table.get("regression", pd.Series(False, index=table.index)).eq(True)

    table = table.assign(_entry=_entry_order(table), _axis=_axis_order(table, axes))
    table = table.sort_values(
        ["protocol_hash", "task", "_entry", "model", "variant", "source", "_axis", "magnitude", "condition"]
    )
    table = table.drop(columns=["_entry", "_axis"]).reset_index(drop=True)

    rarity, replays, rare_warnings = rare_states.read([(source.label, source.folder) for source in sources])
    cases, unseen = rare_states.clean_cases(ok, episodes, rarity)
    unshared, not_paired = rare_states.unshared_tasks(cases)
    rarity_curves = rare_states.rarity_curves(table, cases)

    return Leaderboard(
        conditions=table,
        models=_model_summaries(table, outcomes),
        improvement=_improvement(table, outcomes),
        failed=failed,
        probes=_probes(ok),
        curves=_curves(table, axes),
        axes=axes,
        protocols=_protocols(conditions),
        root=folders[0],
        baseline=str(baseline) if baseline is not None else None,
        warnings=_warnings(table, conditions, failed, where)
        + within_folder_warnings(conditions)
        + _left_out_warnings(left_out, where)
        + rare_warnings
        + unseen
        + not_paired,
        left_out=left_out,
        sources=sources,
        refused=refused,
        rarity=rarity_curves,
        rarity_pairs=rare_states.rarity_pairs(rarity_curves, cases, unshared),
        replays=replays,
    )
