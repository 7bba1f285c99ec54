"""Leaderboard: read a sweep's Parquet rows back and compare models with intervals, never bare means.

    python -m harness.report.leaderboard results/robustness [--out DIR] [--baseline results/previous]

Rows are grouped by protocol × task × model × condition. Rows of different protocols land in
different tables (DESIGN.md, "Evaluation integrity"). Each success rate carries a stratified
bootstrap CI over seeds and episodes; each perturbed condition is compared with the clean
condition of the same trial on the same cases (paired); models are summarised across tasks by
the interquartile mean and compared per task by the probability of improvement (rliable).
Failed trials are counted and listed with their error; the random and oracle controllers stay
in as the floor and the ceiling.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import itertools
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.report import stats  # noqa: E402
from harness.report.results import EPISODE_SCHEMA, EPISODES_DIR, load  # noqa: E402

logger = logging.getLogger(__name__)

GROUP = ["protocol_hash", "task", "model", "condition"]
WIDE_CI_HALF_WIDTH = 0.10  # warn when a success CI is wider than ±10 points: too few episodes or seeds to rank on
# The reference controllers of harness.sweep.config.CONTROLLERS, named here so that reading results needs no torch.
FLOOR, CEILING = "random", "oracle"
VARIANT_SEP = " · "  # "lewm · planner.name=mppi": a model entry's name and what sets it apart

UNKNOWN_PROTOCOL = "unknown"
FAILED_COLUMNS = ("trial", "protocol", "task", "model", "seed", "condition", "error")


def _base_model(models: pd.Series) -> pd.Series:
    """Zoo names without their variant, to find the floor and ceiling under any grid."""
    return models.str.split(VARIANT_SEP, regex=False).str[0]


class NoResultsError(FileNotFoundError):
    """The results folder is missing or holds no condition rows."""


@dataclass
class Leaderboard:
    """Everything the tables and plots show, as DataFrames."""

    conditions: pd.DataFrame  # one row per protocol × task × model × condition
    models: pd.DataFrame  # IQM of clean success across tasks, per protocol × model
    improvement: pd.DataFrame  # P(X > Y) per protocol × task × model pair, clean condition
    failed: pd.DataFrame  # one row per failed trial, with its error
    protocols: dict[str, dict[str, Any]]  # protocol_hash -> resolved protocol
    root: str
    baseline: str | None = None
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- reading rows


@dataclass
class _TrialOutcomes:
    """One trial's episode outcomes under one condition, in case_seed order."""

    trial_id: str
    seed: int
    success: np.ndarray  # (episodes,) bool
    case_seeds: np.ndarray | None  # (episodes,) int; None when rebuilt from a condition row alone
    plan_ms: np.ndarray  # (episodes,) float, may be empty
    final_distance: np.ndarray  # (episodes,) float, may be empty


def _read(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(condition rows, episode rows) under ``root``; a missing or empty folder raises NoResultsError."""
    try:
        conditions = load(str(root))
    except FileNotFoundError as error:
        raise NoResultsError(
            f"no results under {root}: expected trials/*.parquet written by harness.sweep.cli"
        ) from error
    if conditions.empty:
        raise NoResultsError(f"no results under {root}: its trials/ folder holds no rows")
    try:
        episodes = load(str(root), EPISODES_DIR)
    except FileNotFoundError:
        episodes = pd.DataFrame({name: pd.Series(dtype=object) for name in EPISODE_SCHEMA.names})
    conditions = conditions.copy()
    conditions["protocol_hash"] = conditions["protocol_hash"].fillna(UNKNOWN_PROTOCOL)
    if "variant" in conditions:  # grid points and differing overrides of one model are entries apart, never seeds
        variant = conditions["variant"].fillna("")
        conditions["model"] = conditions["model"].where(variant == "", conditions["model"] + VARIANT_SEP + variant)
    for axis in ("action_noise", "camera_shift"):
        conditions[axis] = conditions[axis].fillna(0.0)
    return conditions, episodes


def _episode_index(episodes: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(trial_id, condition) -> that trial's episodes under that condition, sorted by case_seed."""
    if episodes.empty:
        return {}
    ordered = episodes.sort_values(["trial_id", "condition", "case_seed", "episode"])
    return {key: frame for key, frame in ordered.groupby(["trial_id", "condition"], sort=False)}


def _outcomes(row: pd.Series, index: dict[tuple[str, str], pd.DataFrame]) -> _TrialOutcomes | None:
    """The episodes behind a condition row; rebuilt as k successes of n when only the row exists."""
    frame = index.get((row["trial_id"], row["condition"]))
    seed = int(row["seed"]) if pd.notna(row["seed"]) else -1
    if frame is not None and len(frame):
        return _TrialOutcomes(
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
    return _TrialOutcomes(row["trial_id"], seed, np.arange(n) < k, None, np.array([]), np.array([]))


def _is_clean(frame: pd.DataFrame) -> pd.Series:
    return frame["condition"] == "clean"


def _axis(row: pd.Series) -> str:
    """Which robustness axis a condition row lies on: clean, one perturbation's name, or mixed."""
    if row["condition"] == "clean":
        return "clean"
    if "," in row["condition"]:
        return "mixed"
    return row["condition"].split("=")[0]


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
        if t.trial_id in clean_of_trial and clean_of_trial[t.trial_id] is not t
        if (pair := _pair_on_case_seed(clean_of_trial[t.trial_id], t)) is not None
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


def _robustness(table: pd.DataFrame) -> pd.DataFrame:
    """Normalised area under success vs magnitude per protocol × task × model, per axis (clean at 0)."""
    records = []
    for (protocol, task, model), rows in table.groupby(["protocol_hash", "task", "model"], sort=False):
        record = {"protocol_hash": protocol, "task": task, "model": model}
        for axis, other in (("action_noise", "camera_shift"), ("camera_shift", "action_noise")):
            curve = rows[(rows[other] == 0) & rows["success"].notna()]
            record[f"robustness_{axis}"] = stats.normalised_auc(curve[axis], curve["success"])
        records.append(record)
    return pd.DataFrame.from_records(records)


def _condition_order(table: pd.DataFrame) -> pd.Series:
    """Clean first, then action noise by magnitude, then camera shift, then combined perturbations."""
    rank = table.apply(_axis, axis=1).map({"clean": 0, "action_noise": 1, "camera_shift": 2, "mixed": 3})
    return rank * 1e6 + table["action_noise"].fillna(0) * 1e3 + table["camera_shift"].fillna(0)


def _model_order(table: pd.DataFrame) -> pd.Series:
    """Within a task: the oracle (ceiling) first, models by clean success, the random floor last."""
    clean = table[table["axis"] == "clean"].set_index(["protocol_hash", "task", "model"])["success"]
    keys = list(zip(table["protocol_hash"], table["task"], table["model"], strict=True))
    order = [-(clean.get(key, np.nan) if pd.notna(clean.get(key, np.nan)) else -1.0) for key in keys]
    pinned = _base_model(table["model"]).map({CEILING: -10.0, FLOOR: 10.0}).fillna(0.0)
    return pinned + pd.Series(order, index=table.index)


def _failed_trials(conditions: pd.DataFrame) -> pd.DataFrame:
    failed = conditions[conditions["status"] == "failed"]
    columns = ["protocol_hash", "task", "model", "seed", "trial_id", "condition", "error"]
    if failed.empty:
        return pd.DataFrame(columns=columns)
    first = failed.sort_values("condition", na_position="first").drop_duplicates("trial_id")
    first = first.assign(error=first["error"].fillna("(no error recorded)"))
    return first[columns].sort_values(["protocol_hash", "task", "model", "seed"]).reset_index(drop=True)


def _baseline_comparison(
    table: pd.DataFrame,
    current: dict[tuple, list[_TrialOutcomes]],
    baseline: dict[tuple, list[_TrialOutcomes]],
) -> pd.DataFrame:
    """Success of this run minus the baseline's per group: paired on (seed, case_seed) where both ran the same cases."""
    records = []
    for key in table.set_index(GROUP).index:
        now, before = current.get(key, []), baseline.get(key, [])
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


def _group_outcomes(ok: pd.DataFrame, index: dict) -> dict[tuple, list[_TrialOutcomes]]:
    """Protocol × task × model × condition -> the outcomes of each trial in that group."""
    return {
        key: [o for _, row in rows.iterrows() if (o := _outcomes(row, index)) is not None]
        for key, rows in ok.groupby(GROUP, sort=False)
    }


def _model_summaries(table: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]]) -> pd.DataFrame:
    """IQM of clean per-seed success across tasks, per protocol × model, with a task-stratified CI."""
    clean = table[(table["axis"] == "clean") & (table["seeds"] > 0)]
    records = []
    for (protocol, model), rows in clean.groupby(["protocol_hash", "model"], sort=False):
        by_task = [[t.success for t in outcomes[tuple(row[GROUP])]] for _, row in rows.iterrows()]
        interval = stats.iqm_bootstrap_ci(by_task)
        records.append(
            {
                "protocol_hash": protocol,
                "model": model,
                "iqm": interval.estimate,
                "iqm_ci_low": interval.low,
                "iqm_ci_high": interval.high,
                "tasks": ", ".join(sorted(rows["task"])),
                "runs": int(rows["seeds"].sum()),
            }
        )
    columns = ["protocol_hash", "model", "iqm", "iqm_ci_low", "iqm_ci_high", "tasks", "runs"]
    models = pd.DataFrame.from_records(records, columns=columns)
    return models.sort_values(["protocol_hash", "iqm"], ascending=[True, False]).reset_index(drop=True)


def _improvement(table: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]]) -> pd.DataFrame:
    """P(X > Y) between every pair of models per protocol × task, over per-seed clean success rates."""
    clean = table[(table["axis"] == "clean") & (table["seeds"] > 0)]
    records = []
    for (protocol, task), rows in clean.groupby(["protocol_hash", "task"], sort=False):
        runs = {row["model"]: [t.success.mean() for t in outcomes[tuple(row[GROUP])]] for _, row in rows.iterrows()}
        for x, y in itertools.combinations(list(rows["model"]), 2):
            records.append(
                {
                    "protocol_hash": protocol,
                    "task": task,
                    "model_x": x,
                    "model_y": y,
                    "p_x_better": stats.probability_of_improvement(runs[x], runs[y]),
                    "runs_x": len(runs[x]),
                    "runs_y": len(runs[y]),
                }
            )
    columns = ["protocol_hash", "task", "model_x", "model_y", "p_x_better", "runs_x", "runs_y"]
    return pd.DataFrame.from_records(records, columns=columns)


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


def _condition_table(ok: pd.DataFrame, outcomes: dict[tuple, list[_TrialOutcomes]]) -> pd.DataFrame:
    """One row of statistics per protocol × task × model × condition of the successful trials."""
    clean_of_trial = {
        t.trial_id: t for key, rows in ok[_is_clean(ok)].groupby(GROUP, sort=False) for t in outcomes[key]
    }
    records = []
    for key, rows in ok.groupby(GROUP, sort=False):
        record = dict(zip(GROUP, key, strict=True))
        record.update(action_noise=rows["action_noise"].iloc[0], camera_shift=rows["camera_shift"].iloc[0])
        record.update(_condition_stats(rows, outcomes[key], clean_of_trial))
        records.append(record)
    table = pd.DataFrame.from_records(
        records, columns=[*GROUP, "action_noise", "camera_shift"] if not records else None
    )
    return table.reindex(columns=list(dict.fromkeys([*table.columns, *_STAT_COLUMNS])))


def _add_failures(table: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """Count failed trials per task × model, and give a row to each task × model whose every trial failed."""
    keys = ["protocol_hash", "task", "model"]
    known = failed[failed["protocol_hash"] != UNKNOWN_PROTOCOL]
    counts = known.groupby(keys).size().rename("failed_trials").reset_index()
    missing = counts.merge(table[keys].drop_duplicates(), how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"][keys]
    placeholders = missing.assign(condition="(all trials failed)", action_noise=0.0, camera_shift=0.0, seeds=0)
    table = pd.concat([table, placeholders], ignore_index=True) if len(placeholders) else table
    table = table.merge(counts, on=keys, how="left")
    return table.assign(
        failed_trials=table["failed_trials"].fillna(0).astype(int),
        seeds=table["seeds"].fillna(0).astype(int),
        episodes=table["episodes"].fillna(0).astype(int),
    )


def build(root: str | Path, baseline: str | Path | None = None) -> Leaderboard:
    """Read a results folder (and optionally a baseline folder) into every table the leaderboard shows."""
    conditions, episodes = _read(root)
    ok = conditions[conditions["status"] != "failed"]
    outcomes = _group_outcomes(ok, _episode_index(episodes))
    failed = _failed_trials(conditions)

    table = _add_failures(_condition_table(ok, outcomes), failed)
    table["axis"] = table.apply(_axis, axis=1).where(table["seeds"] > 0, "none")
    table = table.merge(_robustness(table), on=["protocol_hash", "task", "model"], how="left")
    table["wide_ci"] = table["success_half_width"] > WIDE_CI_HALF_WIDTH
    if baseline is not None:
        base_conditions, base_episodes = _read(baseline)
        base_ok = base_conditions[base_conditions["status"] != "failed"]
        comparison = _baseline_comparison(table, outcomes, _group_outcomes(base_ok, _episode_index(base_episodes)))
        table = table.merge(comparison, on=GROUP, how="left") if len(comparison) else table
        table["regression"] = table.get("regression", pd.Series(False, index=table.index)).eq(True)

    table = table.assign(_model=_model_order(table), _condition=_condition_order(table))
    table = table.sort_values(["protocol_hash", "task", "_model", "model", "_condition"])
    table = table.drop(columns=["_model", "_condition"]).reset_index(drop=True)

    warnings = []
    wide = [
        f"{row.task}/{row.model}/{row.condition} [{row.protocol_hash}] ±{100 * row.success_half_width:.1f} pp"
        for row in table[table["wide_ci"]].itertuples()
    ]
    if wide:
        warnings.append(
            f"{len(wide)} success CI(s) exceed ±{100 * WIDE_CI_HALF_WIDTH:.0f} pp; "
            f"add episodes or seeds before ranking on them: {'; '.join(wide)}"
        )
    if len(failed):
        warnings.append(f"{len(failed)} failed trial(s) under {root}; listed with their errors in the leaderboard")

    return Leaderboard(
        conditions=table,
        models=_model_summaries(table, outcomes),
        improvement=_improvement(table, outcomes),
        failed=failed,
        protocols=_protocols(conditions),
        root=str(root),
        baseline=str(baseline) if baseline is not None else None,
        warnings=warnings,
    )


def summarize(root: str | Path) -> pd.DataFrame:
    """One row per protocol × task × model × condition: success with CIs, paired Δ vs clean, robustness, cost."""
    return build(root).conditions


# --------------------------------------------------------------------------- formatting


def _pct(value: float) -> str:
    return "—" if pd.isna(value) else f"{100 * value:.1f}"


def _pct_ci(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _signed_ci(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _number(value: float, digits: int = 0) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    if pd.isna(value):
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _model_label(model: str) -> str:
    base, _, variant = model.partition(VARIANT_SEP)
    label = {FLOOR: f"{FLOOR} (floor)", CEILING: f"{CEILING} (ceiling)"}.get(base, base)
    return label + VARIANT_SEP + variant if variant else label


def _flag(row: pd.Series, key: str) -> bool:
    """A boolean column that may be missing or NaN (rows without a baseline match)."""
    value = row.get(key, False)
    return isinstance(value, bool | np.bool_) and bool(value)


def _notes(row: pd.Series) -> str:
    notes = []
    if row.get("wide_ci", False):
        notes.append(f"⚠ CI ±{100 * row['success_half_width']:.0f} pp")
    if row.get("failed_trials", 0):
        notes.append(f"✗ {row['failed_trials']} failed")
    if _flag(row, "regression"):
        notes.append("▼ regression vs baseline")
    if _flag(row, "improvement_vs_baseline"):
        notes.append("▲ better than baseline")
    if row.get("seeds", 0) == 0 and row.get("axis") == "none":
        notes.append("no successful trial")
    return "; ".join(notes)


def _columns(board: Leaderboard) -> list[tuple[str, str]]:
    """(header, key) of the leaderboard columns; the key names a formatter in _cell."""
    columns = [
        ("task", "task"),
        ("model", "model"),
        ("condition", "condition"),
        ("success % [95% CI]", "success"),
        ("Δ vs clean, pp [95% CI]", "delta"),
        ("McNemar p", "mcnemar_p"),
        ("AUC noise %", "robustness_action_noise"),
        ("AUC shift %", "robustness_camera_shift"),
        ("plan ms", "plan_ms_median"),
        ("tokens/frame", "tokens_per_frame"),
        ("seeds × eps", "n"),
    ]
    if board.baseline is not None:
        columns.append(("vs baseline, pp [95% CI]", "vs_baseline"))
    columns.append(("notes", "notes"))
    return columns


def _cell(row: pd.Series, key: str, first_of_model: bool) -> tuple[str, float | str]:
    """(text, sort value) of one cell."""
    if key == "model":
        return _model_label(row["model"]), row["model"]
    if key in ("task", "condition"):
        return str(row[key]), str(row[key])
    if key == "success":
        return _pct_ci(row["success"], row["success_ci_low"], row["success_ci_high"]), row["success"]
    if key == "delta":
        return _signed_ci(row["delta_vs_clean"], row["delta_ci_low"], row["delta_ci_high"]), row["delta_vs_clean"]
    if key == "mcnemar_p":
        return _p_value(row["mcnemar_p"]), row["mcnemar_p"]
    if key.startswith("robustness_"):
        value = row[key] if first_of_model else np.nan  # one value per task × model: shown on its first row
        return _pct(value), row[key]
    if key == "plan_ms_median":
        return _number(row[key], 1), row[key]
    if key == "tokens_per_frame":
        return _number(row[key]), row[key]
    if key == "n":
        return f"{row['seeds']} × {row['episodes'] // max(row['seeds'], 1)}", row["episodes"]
    if key == "vs_baseline":
        value = row.get("vs_baseline", np.nan)
        text = _signed_ci(value, row.get("vs_baseline_low"), row.get("vs_baseline_high"))
        if pd.notna(value):
            text += " paired" if row.get("vs_baseline_paired") else " unpaired"
        return text, value
    return _notes(row), _notes(row)


def _protocol_title(protocol_hash: str, protocol: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in sorted(protocol.items()) if k != "name")
    name = protocol.get("name", "?")
    return f"Protocol `{protocol_hash}` — {name}" + (f" ({fields})" if fields else "")


def protocol_note(protocols: dict[str, dict[str, Any]]) -> str:
    """One line saying why several protocols get separate tables, naming the fields that differ."""
    if len(protocols) < 2:
        return ""
    keys = sorted({k for p in protocols.values() for k in p} - {"name"})
    differing = []
    for key in keys:
        values = [p.get(key) for p in protocols.values()]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            differing.append(f"{key} ({' vs '.join(str(v) for v in values)})")
    why = "; they differ in " + ", ".join(differing) if differing else ""
    names = ", ".join(f"{p.get('name', '?')} `{h}`" for h, p in protocols.items())
    return (
        f"Note: {len(protocols)} evaluation protocols ({names}) are shown in separate tables, "
        f"never ranked together: a success rate means something else under each{why}."
    )


def _rows_by_protocol(board: Leaderboard) -> Iterable[tuple[str, pd.DataFrame]]:
    yield from board.conditions.groupby("protocol_hash", sort=True)


def _first_of_model(rows: pd.DataFrame) -> pd.Series:
    return ~rows.duplicated(["task", "model"])


def _table_cells(board: Leaderboard, rows: pd.DataFrame) -> tuple[list[tuple[str, str]], list[list[tuple[str, Any]]]]:
    """The (header, key) columns and (text, sort value) cells of one protocol's table.

    A column with no value in any row (no camera shifts run, no baseline match) is left out.
    """
    columns = _columns(board)
    first = _first_of_model(rows)
    cells = [[_cell(row, key, first[i]) for _, key in columns] for i, row in rows.iterrows()]
    always = {"task", "model", "condition", "success", "notes"}
    keep = [j for j, (_, key) in enumerate(columns) if key in always or any(row[j][0] != "—" for row in cells)]
    return [columns[j] for j in keep], [[row[j] for j in keep] for row in cells]


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(cells) for cells in body)])


def to_markdown(board: Leaderboard) -> str:
    """The leaderboard as Markdown: one table per protocol, the IQM per model, failed trials."""
    parts = [f"## Leaderboard: `{board.root}`"]
    if note := protocol_note(board.protocols):
        parts.append(note)
    for protocol_hash, rows in _rows_by_protocol(board):
        parts.append(f"### {_protocol_title(protocol_hash, board.protocols.get(protocol_hash, {}))}")
        columns, cells = _table_cells(board, rows)
        body = [[text for text, _ in row] for row in cells]
        parts.append(_markdown_table([header for header, _ in columns], body))
        models = board.models[board.models["protocol_hash"] == protocol_hash]
        if len(models):
            body = [
                [_model_label(m.model), _pct_ci(m.iqm, m.iqm_ci_low, m.iqm_ci_high), m.tasks, str(m.runs)]
                for m in models.itertuples()
            ]
            parts.append(
                "IQM of clean success across tasks (rliable):\n\n"
                + _markdown_table(["model", "IQM % [95% CI]", "tasks", "runs"], body)
            )
    parts.append(
        "Success: mean over seeds, 95% stratified bootstrap CI (seeds and episodes resampled). "
        "Δ vs clean: paired on the same cases (bootstrap CI; exact McNemar p on discordant pairs). "
        "AUC: normalised area under success vs magnitude (mean success over the range, clean at 0)."
    )
    if len(board.failed):
        body = [[_text(value) for value in _failed_values(f, full_error=False)] for f in board.failed.itertuples()]
        parts.append(f"**{len(board.failed)} failed trial(s)**:\n\n" + _markdown_table(list(FAILED_COLUMNS), body))
    else:
        parts.append("Failed trials: 0.")
    return "\n\n".join(parts) + "\n"


def _text(value: Any) -> str:
    """A cell's text: '—' for a missing value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def _failed_values(failed: Any, full_error: bool) -> list[Any]:
    """The FAILED_COLUMNS values of one failed trial; the error as its last line unless ``full_error``."""
    error = failed.error if full_error else _one_line(failed.error)
    return [failed.trial_id, failed.protocol_hash, failed.task, failed.model, failed.seed, failed.condition, error]


def _one_line(error: str, limit: int = 160) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "(no error recorded)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- plots


def _model_colours(models: Iterable[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10").colors
    named = {FLOOR: "0.55", CEILING: "0.15"}
    others = sorted(m for m in set(models) if m not in named)
    return {m: palette[i % len(palette)] for i, m in enumerate(others)} | named


def _robustness_figure(rows: pd.DataFrame) -> plt.Figure | None:
    """Success vs magnitude per task (rows) and axis (columns), one line per model with its CI band."""
    axes_present = [a for a in ("action_noise", "camera_shift") if (rows["axis"] == a).any()]
    if not axes_present:
        return None
    tasks = sorted(rows["task"].unique())
    colours = _model_colours(rows["model"])
    fig, axes = plt.subplots(
        len(tasks), len(axes_present), figsize=(4.2 * len(axes_present), 3.0 * len(tasks)), squeeze=False
    )
    for (i, task), (j, axis) in itertools.product(enumerate(tasks), enumerate(axes_present)):
        ax = axes[i][j]
        other = "camera_shift" if axis == "action_noise" else "action_noise"
        curve = rows[(rows["task"] == task) & (rows[other] == 0) & rows["success"].notna()]
        for model, points in curve.groupby("model"):
            points = points.sort_values(axis)
            ax.plot(points[axis], 100 * points["success"], "o-", color=colours[model], label=_model_label(model))
            ax.fill_between(
                points[axis],
                100 * points["success_ci_low"],
                100 * points["success_ci_high"],
                color=colours[model],
                alpha=0.15,
            )
        ax.set(
            title=f"{task}: {axis.replace('_', ' ')}", xlabel=axis.replace("_", " "), ylabel="success %", ylim=(-3, 103)
        )
        ax.grid(alpha=0.3)
    legend = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.tight_layout()
    fig.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return fig


def _pareto_figure(rows: pd.DataFrame) -> plt.Figure | None:
    """Clean success vs median planning time per task; the dashed line joins the models no other beats on both.

    The floor and ceiling controllers do not plan; they are drawn as dotted horizontal references.
    """
    clean = rows[(rows["axis"] == "clean") & rows["success"].notna()]
    anchors = _base_model(clean["model"]).isin([FLOOR, CEILING])
    planners = clean[(clean["plan_ms_median"] > 0) & ~anchors]
    if planners.empty:
        return None
    tasks = sorted(planners["task"].unique())
    colours = _model_colours(rows["model"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for row in clean[(clean["task"] == task) & anchors].itertuples():
            ax.axhline(100 * row.success, color=colours[row.model], ls=":", lw=1.2, label=_model_label(row.model))
        points = planners[planners["task"] == task].sort_values(["plan_ms_median", "success"], ascending=[True, False])
        for row in points.itertuples():
            ax.errorbar(
                row.plan_ms_median,
                100 * row.success,
                yerr=[[100 * (row.success - row.success_ci_low)], [100 * (row.success_ci_high - row.success)]],
                fmt="o",
                color=colours[row.model],
                capsize=3,
            )
            ax.annotate(
                _model_label(row.model),
                (row.plan_ms_median, 100 * row.success),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
        frontier = points[points["success"] >= points["success"].cummax()]
        ax.step(frontier["plan_ms_median"], 100 * frontier["success"], where="post", color="0.4", ls="--", lw=1)
        ax.set(xscale="log", title=f"{task}: success vs plan time", xlabel="plan ms (median, log)", ylabel="success %")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _surprise_figure(rows: pd.DataFrame) -> plt.Figure | None:
    """Surprise AUROC (impossible vs possible events) per task and model; 0.5 is chance."""
    values = rows[rows["surprise_auroc"].notna()].drop_duplicates(["task", "model"])
    if values.empty:
        return None
    tasks = sorted(values["task"].unique())
    models = sorted(values["model"].unique())
    colours = _model_colours(rows["model"])
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(tasks) * len(models) ** 0.5), 3.4))
    for k, model in enumerate(models):
        by_task = values[values["model"] == model].set_index("task")["surprise_auroc"]
        heights = [by_task.get(task, np.nan) for task in tasks]
        ax.bar(np.arange(len(tasks)) + k * width, heights, width, color=colours[model], label=_model_label(model))
    ax.axhline(0.5, color="0.3", ls="--", lw=1, label="chance")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    ax.set(ylim=(0, 1), ylabel="surprise AUROC", title="Surprise on impossible events")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- HTML page

_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, col) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0];
  const dir = th.dataset.dir === "asc" ? -1 : 1;
  th.dataset.dir = dir > 0 ? "asc" : "desc";
  const key = (row) => { const v = row.cells[col].dataset.v; const n = Number(v);
                         return v === "" ? null : (isNaN(n) ? v : n); };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // missing values last either way
    return (typeof x === typeof y ? (x > y) - (x < y) : (typeof x === "number" ? -1 : 1)) * dir;
  }).forEach((row) => body.appendChild(row));
}));
"""

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #f1f1f1; } table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e2e2e2; }
tr.floor td, tr.ceiling td { color: #666; font-style: italic; }
td.warn { color: #a15c00; } tr.regression td { background: #fde8e8; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; } .note { background: #fff6d8; padding: 0.5em 1em; }
pre { white-space: pre-wrap; font-size: 12px; margin: 0; }
"""


def _png(fig: plt.Figure, path: Path) -> str:
    """Save a figure to ``path`` and return it base64-encoded for the self-contained page."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # keeps legends outside the axes
    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_table(header: list[str], rows: list[tuple[str, list[tuple[str, Any]]]], sortable: bool = True) -> str:
    def value(sort: Any) -> str:
        return "" if sort is None or (isinstance(sort, float) and np.isnan(sort)) else html.escape(str(sort))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{css}">' + "".join(f'<td data-v="{value(sort)}">{text}</td>' for text, sort in cells) + "</tr>"
        for css, cells in rows
    )
    return (
        f'<table class="{"sortable" if sortable else ""}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def to_html(board: Leaderboard, images: dict[str, dict[str, str]]) -> str:
    """One self-contained page: sortable tables, plots embedded as base64 PNG, failed trials."""
    sections = [f"<h1>wmbench leaderboard</h1><p>Results: <code>{html.escape(board.root)}</code>"]
    if board.baseline:
        sections[-1] += f"; baseline: <code>{html.escape(board.baseline)}</code>"
    sections[-1] += "</p>"
    if note := protocol_note(board.protocols):
        sections.append(f'<p class="note">{html.escape(note)}</p>')
    for protocol_hash, rows in _rows_by_protocol(board):
        title = _protocol_title(protocol_hash, board.protocols.get(protocol_hash, {}))
        sections.append(f"<h2>{html.escape(title).replace('`', '')}</h2>")
        columns, cells = _table_cells(board, rows)
        table_rows = []
        for (_, row), row_cells in zip(rows.iterrows(), cells, strict=True):
            css = {FLOOR: "floor", CEILING: "ceiling"}.get(row["model"], "")
            css += " regression" if _flag(row, "regression") else ""
            html_cells = []
            for (_, key), (text, sort) in zip(columns, row_cells, strict=True):
                escaped = html.escape(text)
                if key == "notes" and text:
                    escaped = f'<span class="warn">{escaped}</span>'
                html_cells.append((escaped, sort))
            table_rows.append((css.strip(), html_cells))
        sections.append(_html_table([h for h, _ in columns], table_rows))
        models = board.models[board.models["protocol_hash"] == protocol_hash]
        if len(models):
            sections.append("<h3>Interquartile mean of clean success across tasks</h3>")
            sections.append(
                _html_table(
                    ["model", "IQM % [95% CI]", "tasks", "runs"],
                    [
                        (
                            "",
                            [
                                (html.escape(_model_label(m.model)), m.model),
                                (_pct_ci(m.iqm, m.iqm_ci_low, m.iqm_ci_high), m.iqm),
                                (html.escape(m.tasks), m.tasks),
                                (str(m.runs), m.runs),
                            ],
                        )
                        for m in models.itertuples()
                    ],
                )
            )
        pairs = board.improvement[board.improvement["protocol_hash"] == protocol_hash]
        if len(pairs):
            sections.append("<h3>Probability of improvement P(X &gt; Y), clean, over seeds</h3>")
            sections.append(
                _html_table(
                    ["task", "X", "Y", "P(X > Y)", "runs X", "runs Y"],
                    [
                        (
                            "",
                            [
                                (html.escape(p.task), p.task),
                                (html.escape(p.model_x), p.model_x),
                                (html.escape(p.model_y), p.model_y),
                                (f"{p.p_x_better:.2f}", p.p_x_better),
                                (str(p.runs_x), p.runs_x),
                                (str(p.runs_y), p.runs_y),
                            ],
                        )
                        for p in pairs.itertuples()
                    ],
                )
            )
        for name, caption in (
            ("robustness", "Robustness: success vs perturbation magnitude (95% CI bands)"),
            ("pareto", "Success vs planning time (clean; dashed: Pareto front)"),
            ("surprise", "Surprise AUROC on impossible events"),
        ):
            if name in images.get(protocol_hash, {}):
                data = images[protocol_hash][name]
                sections.append(f'<h3>{caption}</h3><img alt="{name} plot" src="data:image/png;base64,{data}">')
    sections.append(f"<h2>Failed trials ({len(board.failed)})</h2>")
    if len(board.failed):
        rows = []
        for failed in board.failed.itertuples():
            *fields, error = [_text(value) for value in _failed_values(failed, full_error=True)]
            cells = [(html.escape(text), text) for text in fields]
            rows.append(("", [*cells, (f"<pre>{html.escape(error)}</pre>", _one_line(error))]))
        sections.append(_html_table(list(FAILED_COLUMNS), rows))
    else:
        sections.append("<p>None.</p>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>wmbench leaderboard</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(sections)}<script>{_SORT_SCRIPT}</script></body></html>\n"
    )


def write(board: Leaderboard, out_dir: str | Path) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.html and the PNG plots of a built leaderboard; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    images: dict[str, dict[str, str]] = {}
    figures = (("robustness", _robustness_figure), ("pareto", _pareto_figure), ("surprise", _surprise_figure))
    for protocol_hash, rows in _rows_by_protocol(board):
        for name, make in figures:
            fig = make(rows)
            if fig is None:
                continue
            path = out / f"{name}-{protocol_hash}.png"
            images.setdefault(protocol_hash, {})[name] = _png(fig, path)
            written[f"{name}-{protocol_hash}"] = path
    written["markdown"] = out / "leaderboard.md"
    written["markdown"].write_text(to_markdown(board), encoding="utf-8")
    written["html"] = out / "leaderboard.html"
    written["html"].write_text(to_html(board, images), encoding="utf-8")
    return written


def default_output_dir(root: str | Path) -> Path:
    """``<root>/leaderboard`` for a local folder or ``file://`` URI; ``results/<name>/leaderboard`` otherwise."""
    root = str(root)
    if root.startswith("file://"):
        return Path(root.removeprefix("file://")) / "leaderboard"
    if "://" in root:
        return Path("results", root.rstrip("/").rsplit("/", 1)[-1], "leaderboard")
    return Path(root) / "leaderboard"


def render(root: str | Path, out_dir: str | Path | None = None, baseline: str | Path | None = None) -> dict[str, Path]:
    """Build the leaderboard of ``root`` (default output: ROOT/leaderboard/), log its warnings, write it."""
    board = build(root, baseline)
    for warning in board.warnings:
        logger.warning(warning)
    return write(board, out_dir if out_dir is not None else default_output_dir(root))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report.leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results folder written by harness.sweep.cli (holds trials/ and episodes/)")
    parser.add_argument("--out", help="where to write the leaderboard (default: RESULTS/leaderboard/)")
    parser.add_argument("--baseline", help="another results folder to compare against; regressions are marked")
    args = parser.parse_args(argv)
    try:
        board = build(args.results, args.baseline)
    except NoResultsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in board.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    written = write(board, args.out if args.out is not None else default_output_dir(args.results))
    print(written["markdown"].read_text(encoding="utf-8"))
    print(f"Wrote {written['markdown']} and {written['html']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
